import ProdReadyCore
import CRdKafka

/// Topic administration (create, delete, metadata) through librdkafka's admin API.
public final class KafkaAdmin: Sendable {
    private let handle: KafkaHandle

    public init(configuration: KafkaConfiguration) throws {
        handle = try KafkaHandle(type: RD_KAFKA_PRODUCER, configuration: configuration, extra: [])
    }

    public func metadata(timeout: Duration = .seconds(5)) async throws -> KafkaClusterMetadata {
        try await handle.metadata(timeout: timeout)
    }

    /// Creates `name` with `partitions`; creating a topic that already exists is an error unless
    /// `allowExisting`.
    public func createTopic(_ name: String, partitions: Int, replicationFactor: Int = 1, allowExisting: Bool = false, timeout: Duration = .seconds(10)) async throws {
        guard !name.isEmpty else { throw ProdReadyError(.invalidArgument, "Kafka topic name must not be empty") }
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
        guard !name.isEmpty else { throw ProdReadyError(.invalidArgument, "Kafka topic name must not be empty") }
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
