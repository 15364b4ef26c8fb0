import ProdReadyCore
import CRdKafka

/// A Kafka consumer: either a consumer-group member (`subscribe`) or a manual reader (`assign`).
public final class KafkaConsumer: Sendable {
    private let handle: KafkaHandle

    /// - Parameter groupID: the consumer group; required by librdkafka even for manual assignment.
    public init(configuration: KafkaConfiguration, groupID: String, startFromEarliest: Bool = true) throws {
        guard !groupID.isEmpty else { throw ProdReadyError(.invalidArgument, "Kafka consumer group id must not be empty") }
        handle = try KafkaHandle(
            type: RD_KAFKA_CONSUMER,
            configuration: configuration,
            extra: [
                ("group.id", groupID),
                ("auto.offset.reset", startFromEarliest ? "earliest" : "latest"),
                ("enable.auto.commit", "false"),
            ]
        )
        rd_kafka_poll_set_consumer(handle.pointer)
    }

    public func subscribe(topics: [String]) async throws {
        guard !topics.isEmpty, topics.allSatisfy({ !$0.isEmpty }) else {
            throw ProdReadyError(.invalidArgument, "subscribe needs at least one non-empty topic name")
        }
        try await handle.executor.run { [handle] in
            let list = rd_kafka_topic_partition_list_new(Int32(topics.count))
            defer { rd_kafka_topic_partition_list_destroy(list) }
            for topic in topics { rd_kafka_topic_partition_list_add(list, topic, RD_KAFKA_PARTITION_UA) }
            let code = rd_kafka_subscribe(handle.pointer, list)
            guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw ProdReadyError(.serverError, "Kafka subscribe failed: \(kafkaErrorDescription(code))")
            }
        }
    }

    /// Reads one partition from `offset` without joining a group.
    public func assign(topic: String, partition: Int32, offset: Int64) async throws {
        guard !topic.isEmpty else { throw ProdReadyError(.invalidArgument, "Kafka topic name must not be empty") }
        try await handle.executor.run { [handle] in
            let list = rd_kafka_topic_partition_list_new(1)
            defer { rd_kafka_topic_partition_list_destroy(list) }
            rd_kafka_topic_partition_list_add(list, topic, partition)?.pointee.offset = offset
            let code = rd_kafka_assign(handle.pointer, list)
            guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw ProdReadyError(.serverError, "Kafka assign failed: \(kafkaErrorDescription(code))")
            }
        }
    }

    /// Waits up to `timeout` for the next message; nil if none arrived. Broker-reported errors other than
    /// "end of partition" are thrown.
    public func poll(timeout: Duration) async throws -> KafkaMessage? {
        try await handle.executor.run { [handle] in
            guard let message = rd_kafka_consumer_poll(handle.pointer, Int32(timeout.wholeMilliseconds)) else { return nil }
            defer { rd_kafka_message_destroy(message) }
            return try Self.convert(message)
        }
    }

    /// Waits up to `timeout` for the first message, then takes whatever else is already fetched, up to `limit`
    /// messages in all: one trip to the consumer's executor for many messages.
    public func poll(upTo limit: Int, timeout: Duration) async throws -> [KafkaMessage] {
        guard limit > 0 else { throw ProdReadyError(.invalidArgument, "poll limit must be positive, got \(limit)") }
        return try await handle.executor.run { [handle] in
            var messages: [KafkaMessage] = []
            var wait = Int32(timeout.wholeMilliseconds)
            while messages.count < limit, let message = rd_kafka_consumer_poll(handle.pointer, wait) {
                defer { rd_kafka_message_destroy(message) }
                wait = 0
                do {
                    if let converted = try Self.convert(message) { messages.append(converted) }
                } catch where !messages.isEmpty {
                    // Hand over what was consumed rather than lose it; librdkafka's consumer errors are broker
                    // notices that come back on the next poll while the condition lasts.
                    return messages
                }
            }
            return messages
        }
    }

    /// A consumed message, nil for an end-of-partition notice; a broker-reported error is thrown.
    private static func convert(_ message: UnsafeMutablePointer<rd_kafka_message_t>) throws -> KafkaMessage? {
        let code = message.pointee.err
        if code == RD_KAFKA_RESP_ERR__PARTITION_EOF { return nil }
        guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw ProdReadyError(.serverError, "Kafka consume error: \(kafkaErrorDescription(code))", retriable: true)
        }
        let value = message.pointee.payload.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: message.pointee.len)) } ?? []
        let key = message.pointee.key.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: message.pointee.key_len)) }
        let topic = message.pointee.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
        var headers: [KafkaHeader] = []
        var nativeHeaders: OpaquePointer?
        if rd_kafka_message_headers(message, &nativeHeaders) == RD_KAFKA_RESP_ERR_NO_ERROR, let nativeHeaders {
            var index = 0
            var name: UnsafePointer<CChar>?
            var bytes: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(nativeHeaders, index, &name, &bytes, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                headers.append(KafkaHeader(name.map { String(cString: $0) } ?? "", bytes.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: size)) }))
                index += 1
            }
        }
        return KafkaMessage(topic: topic, partition: message.pointee.partition, offset: message.pointee.offset, key: key, value: value, headers: headers)
    }

    /// Commits the offset after `message` synchronously (at-least-once: call after processing).
    public func commit(_ message: KafkaMessage) async throws {
        try await handle.executor.run { [handle] in
            let list = rd_kafka_topic_partition_list_new(1)
            defer { rd_kafka_topic_partition_list_destroy(list) }
            rd_kafka_topic_partition_list_add(list, message.topic, message.partition)?.pointee.offset = message.offset + 1
            let code = rd_kafka_commit(handle.pointer, list, 0)
            guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw ProdReadyError(.serverError, "Kafka commit failed: \(kafkaErrorDescription(code))", retriable: true)
            }
        }
    }

    /// Leaves the group cleanly so the broker rebalances at once instead of after the session timeout.
    public func close() async throws {
        try await handle.executor.run { [handle] in
            _ = rd_kafka_consumer_close(handle.pointer)
        }
    }
}

extension KafkaConsumer {
    /// Polls until `count` messages arrived or `timeout` passed, committing each when `commit`; returns what
    /// arrived (callers assert on the count, so a shortfall shows exactly what was missing).
    public func collect(_ count: Int, within timeout: Duration, commit: Bool = false) async throws -> [KafkaMessage] {
        var messages: [KafkaMessage] = []
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while messages.count < count, clock.now < deadline {
            for message in try await poll(upTo: count - messages.count, timeout: .milliseconds(200)) {
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
