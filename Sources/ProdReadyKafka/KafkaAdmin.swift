import ProdReadyCore
import CRdKafka

/// Topic administration (create, delete, metadata) through librdkafka's admin API.
public final class KafkaAdmin: Sendable {
    let handle: KafkaHandle
    let configuration: KafkaConfiguration

    public init(configuration: KafkaConfiguration) throws {
        handle = try KafkaHandle(type: RD_KAFKA_PRODUCER, configuration: configuration, extra: [])
        self.configuration = configuration
    }

    public func metadata(timeout: Duration = .seconds(5)) async throws -> KafkaClusterMetadata {
        try await handle.metadata(timeout: timeout)
    }

    /// Creates `name` with `partitions`; creating a topic that already exists is an error unless
    /// `allowExisting`.
    public func createTopic(_ name: String, partitions: Int, replicationFactor: Int = 1, allowExisting: Bool = false, timeout: Duration = .seconds(10)) async throws {
        try validateTopicName(name)
        guard partitions > 0, replicationFactor > 0 else {
            throw ProdReadyError(.invalidArgument, "a topic needs at least one partition and one replica (got \(partitions), \(replicationFactor))")
        }
        try await handle.executor.run { [handle] in
            var errorBuffer = [CChar](repeating: 0, count: 512)
            guard let newTopic = rd_kafka_NewTopic_new(name, Int32(partitions), Int32(replicationFactor), &errorBuffer, errorBuffer.count) else {
                throw ProdReadyError(.invalidArgument, "invalid topic '\(name)': \(string(fromCBuffer: errorBuffer))")
            }
            defer { rd_kafka_NewTopic_destroy(newTopic) }
            var topics: [OpaquePointer?] = [newTopic]
            let results = try runAdmin(handle: handle, operation: RD_KAFKA_ADMIN_OP_CREATETOPICS, expecting: Int32(RD_KAFKA_EVENT_CREATETOPICS_RESULT), timeout: timeout) { options, queue in
                rd_kafka_CreateTopics(handle.pointer, &topics, 1, options, queue)
            } extract: { event, count in
                rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &count)
            }
            for (topic, code, message) in results {
                if code == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS, allowExisting { continue }
                guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
                    throw ProdReadyError(.serverError, "creating topic '\(topic)' failed: \(message)")
                }
            }
        }
    }

    /// Deletes `name`; deleting a topic that does not exist succeeds.
    public func deleteTopic(_ name: String, timeout: Duration = .seconds(10)) async throws {
        try validateTopicName(name)
        try await handle.executor.run { [handle] in
            guard let deleteTopic = rd_kafka_DeleteTopic_new(name) else {
                throw ProdReadyError(.invalidArgument, "invalid topic '\(name)'")
            }
            defer { rd_kafka_DeleteTopic_destroy(deleteTopic) }
            var topics: [OpaquePointer?] = [deleteTopic]
            let results = try runAdmin(handle: handle, operation: RD_KAFKA_ADMIN_OP_DELETETOPICS, expecting: Int32(RD_KAFKA_EVENT_DELETETOPICS_RESULT), timeout: timeout) { options, queue in
                rd_kafka_DeleteTopics(handle.pointer, &topics, 1, options, queue)
            } extract: { event, count in
                rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(event), &count)
            }
            for (topic, code, message) in results where code != RD_KAFKA_RESP_ERR_NO_ERROR && code != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART {
                throw ProdReadyError(.serverError, "deleting topic '\(topic)' failed: \(message)")
            }
        }
    }
}

/// The oldest and the next offset of a partition.
public struct KafkaWatermarks: Sendable, Equatable {
    /// The offset of the oldest message still stored.
    public var low: Int64
    /// The offset the next produced message will get.
    public var high: Int64

    public init(low: Int64, high: Int64) {
        self.low = low
        self.high = high
    }
}

/// How far a consumer group is behind on one partition.
public struct KafkaPartitionLag: Sendable, Equatable {
    public var partition: KafkaTopicPartition
    /// The group's committed offset (the next message it will read); nil if it never committed here.
    public var committed: Int64?
    public var watermarks: KafkaWatermarks
    /// Messages produced but not yet committed by the group (from the oldest stored one if it never committed).
    public var lag: Int64 { watermarks.high - max(committed ?? watermarks.low, watermarks.low) }
}

extension KafkaAdmin {
    /// The partition's oldest and next offsets, asked of its leader.
    public func watermarks(topic: String, partition: Int32, timeout: Duration = .seconds(10)) async throws -> KafkaWatermarks {
        try validateTopicName(topic)
        return try await KafkaHandle.fetchWatermarks([KafkaTopicPartition(topic, partition)], configuration: configuration, timeout: timeout)[0]
    }

    /// Per partition of `topic`, the group's committed offset against the newest offset, in partition order.
    public func consumerGroupLag(group: String, topic: String, timeout: Duration = .seconds(10)) async throws -> [KafkaPartitionLag] {
        guard !group.isEmpty else { throw ProdReadyError(.invalidArgument, "Kafka consumer group id must not be empty") }
        try validateTopicName(topic)
        guard let partitionCount = try await handle.metadata(timeout: timeout).topics[topic] else {
            throw ProdReadyError(.notFound, "Kafka topic '\(topic)' does not exist")
        }
        let partitions = (0..<Int32(partitionCount)).map { KafkaTopicPartition(topic, $0) }
        // A consumer handle that never subscribes asks the group coordinator without joining the group.
        let groupHandle = try KafkaHandle(type: RD_KAFKA_CONSUMER, configuration: configuration, extra: [("group.id", group)])
        let committed = try await groupHandle.committedOffsets(partitions, timeout: timeout)
        let watermarks = try await KafkaHandle.fetchWatermarks(partitions, configuration: configuration, timeout: timeout)
        return zip(partitions, watermarks).map { partition, watermarks in
            KafkaPartitionLag(partition: partition, committed: committed[partition] ?? nil, watermarks: watermarks)
        }
    }
}

extension KafkaHandle {
    /// The partitions' watermarks, in the order asked, as their leaders report them in fetch responses.
    ///
    /// Not ListOffsets: the embedded broker (Tansu 0.6 on S3 storage) answers ListOffsets(latest) with the base
    /// offset of the most recently modified record batch plus one, which ignores the batch's other records and
    /// the S3 timestamps' one-second resolution (measured: 1 after 10 messages). Every Kafka broker reports the
    /// high watermark and log start offset in fetch responses, so a short-lived reader asks that way.
    static func fetchWatermarks(
        _ partitions: [KafkaTopicPartition],
        configuration: KafkaConfiguration,
        timeout: Duration
    ) async throws -> [KafkaWatermarks] {
        guard !partitions.isEmpty else { return [] }
        let reader = try watermarkReader(configuration: configuration)
        return try await reader.executor.run { try readWatermarks(partitions, with: reader, timeout: timeout) }
    }

    /// One reader for all the partitions: each fetch response reports the watermarks of the partitions in it.
    static func watermarkReader(configuration: KafkaConfiguration) throws -> KafkaHandle {
        try KafkaHandle(
            type: RD_KAFKA_CONSUMER,
            configuration: configuration,
            extra: [("group.id", "prodready-watermarks"), ("enable.auto.commit", "false"), ("fetch.wait.max.ms", "10"), ("enable.partition.eof", "true")]
        )
    }

    /// `fetchWatermarks` on the calling thread, which it blocks for up to `timeout`: for librdkafka callbacks,
    /// which already run on a consumer's own executor.
    static func readWatermarks(_ partitions: [KafkaTopicPartition], with reader: KafkaHandle, timeout: Duration) throws -> [KafkaWatermarks] {
        rd_kafka_poll_set_consumer(reader.pointer)
        let code = withPartitionList(partitions.map { ($0, Int64(RD_KAFKA_OFFSET_BEGINNING)) }) { rd_kafka_assign(reader.pointer, $0) }
        guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw ProdReadyError(.serverError, "Kafka assign of \(partitions) failed: \(kafkaErrorDescription(code))")
        }
        defer { _ = rd_kafka_assign(reader.pointer, nil) }
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var lastError = "no fetch response"
        var found: [KafkaTopicPartition: KafkaWatermarks] = [:]
        while clock.now < deadline {
            if let message = rd_kafka_consumer_poll(reader.pointer, 50) {
                let error = message.pointee.err
                let partition = message.pointee.rkt.map { KafkaTopicPartition(String(cString: rd_kafka_topic_name($0)), message.pointee.partition) }
                rd_kafka_message_destroy(message)
                switch error {
                case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
                    throw ProdReadyError(.notFound, "Kafka has no partition \(partition.map(\.description) ?? partitions.map(\.description).joined(separator: ", ")): \(kafkaErrorDescription(error))")
                case RD_KAFKA_RESP_ERR_NO_ERROR, RD_KAFKA_RESP_ERR__PARTITION_EOF:
                    break
                default:
                    lastError = kafkaErrorDescription(error)
                }
            }
            for partition in partitions where found[partition] == nil {
                var low = Int64(RD_KAFKA_OFFSET_INVALID)
                var high = Int64(RD_KAFKA_OFFSET_INVALID)
                if rd_kafka_get_watermark_offsets(reader.pointer, partition.topic, partition.partition, &low, &high) == RD_KAFKA_RESP_ERR_NO_ERROR, high >= 0 {
                    found[partition] = KafkaWatermarks(low: max(0, low), high: high)
                }
            }
            let all = partitions.compactMap { found[$0] }
            if all.count == partitions.count { return all }
        }
        let missing = partitions.filter { found[$0] == nil }.map(\.description).joined(separator: ", ")
        throw ProdReadyError(.timeout, "Kafka reported no watermarks for \(missing) within \(timeout) (\(lastError))", retriable: true)
    }
}

/// Runs one admin request and returns (topic, error code, error text) per topic. Call on the handle's executor.
private func runAdmin(
    handle: KafkaHandle,
    operation: rd_kafka_admin_op_t,
    expecting eventType: Int32,
    timeout: Duration,
    submit: (OpaquePointer?, OpaquePointer?) -> Void,
    extract: (OpaquePointer?, inout Int) -> UnsafeMutablePointer<OpaquePointer?>?
) throws -> [(String, rd_kafka_resp_err_t, String)] {
    guard let queue = rd_kafka_queue_new(handle.pointer) else {
        throw ProdReadyError(.protocolError, "librdkafka could not create a result queue")
    }
    defer { rd_kafka_queue_destroy(queue) }
    let options = rd_kafka_AdminOptions_new(handle.pointer, operation)
    defer { rd_kafka_AdminOptions_destroy(options) }
    var errorBuffer = [CChar](repeating: 0, count: 512)
    _ = rd_kafka_AdminOptions_set_operation_timeout(options, Int32(timeout.wholeMilliseconds), &errorBuffer, errorBuffer.count)
    submit(options, queue)
    guard let event = rd_kafka_queue_poll(queue, Int32(timeout.wholeMilliseconds + 1000)) else {
        throw ProdReadyError(.timeout, "Kafka admin request got no answer within \(timeout)", retriable: true)
    }
    defer { rd_kafka_event_destroy(event) }
    let eventError = rd_kafka_event_error(event)
    guard eventError == RD_KAFKA_RESP_ERR_NO_ERROR else {
        let text = rd_kafka_event_error_string(event).map { String(cString: $0) } ?? kafkaErrorDescription(eventError)
        throw ProdReadyError(.connectionFailed, "Kafka admin request failed: \(text)", retriable: true)
    }
    guard rd_kafka_event_type(event) == eventType else {
        throw ProdReadyError(.protocolError, "unexpected Kafka admin event type \(rd_kafka_event_type(event))")
    }
    var count = 0
    guard let results = extract(event, &count) else { return [] }
    return (0..<count).compactMap { index in
        guard let result = results[index] else { return nil }
        let code = rd_kafka_topic_result_error(result)
        let message = rd_kafka_topic_result_error_string(result).map { String(cString: $0) } ?? kafkaErrorDescription(code)
        return (String(cString: rd_kafka_topic_result_name(result)), code, message)
    }
}
