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

/// Runs `body` with a fresh topic of `partitions` partitions, deleted afterwards.
public func withKafkaTopic<Result: Sendable>(
    _ bootstrapServers: String,
    partitions: Int = 1,
    _ body: (_ topic: String) async throws -> Result
) async throws -> Result {
    let admin = try KafkaAdmin(configuration: .embedded(bootstrapServers: bootstrapServers, clientID: "prodready-tests"))
    let topic = uniqueName("t")
    try await admin.createTopic(topic, partitions: partitions)
    return try await runThenCleanUp({ try await body(topic) }, cleanUp: { try await admin.deleteTopic(topic) })
}
