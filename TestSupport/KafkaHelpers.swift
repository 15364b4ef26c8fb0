public import ProdReadyKafka

extension KafkaConsumer {
    /// Polls until `count` messages arrived or `timeout` passed, committing each when `commit`; returns what
    /// arrived (callers assert on the count, so a shortfall shows exactly what was missing).
    public func collect(_ count: Int, within timeout: Duration, commit: Bool = false) async throws -> [KafkaMessage] {
        var messages: [KafkaMessage] = []
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while messages.count < count, clock.now < deadline {
            if let message = try await poll(timeout: .milliseconds(200)) {
                messages.append(message)
                if commit { try await self.commit(message) }
            }
        }
        return messages
    }
}

extension KafkaMessage {
    /// The value as UTF-8 text.
    public var text: String { String(decoding: value, as: UTF8.self) }
}
