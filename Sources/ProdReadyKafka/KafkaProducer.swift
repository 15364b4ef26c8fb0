import ProdReadyCore
import CRdKafka

/// Collects the delivery report of one message; written by librdkafka's callback, read after `flush`, both
/// on the producer's executor queue.
private final class DeliveryBox: @unchecked Sendable {
    // @unchecked Sendable: mutated only on the owning producer's serial executor queue.
    var result: Result<KafkaDeliveryReport, ProdReadyError>?
}

private let deliveryReportCallback: @convention(c) (OpaquePointer?, UnsafePointer<rd_kafka_message_t>?, UnsafeMutableRawPointer?) -> Void = { _, message, _ in
    guard let message, let opaque = message.pointee._private else { return }
    let box = Unmanaged<DeliveryBox>.fromOpaque(opaque).takeRetainedValue()
    if message.pointee.err == RD_KAFKA_RESP_ERR_NO_ERROR {
        let topic = message.pointee.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
        box.result = .success(KafkaDeliveryReport(topic: topic, partition: message.pointee.partition, offset: message.pointee.offset))
    } else {
        box.result = .failure(ProdReadyError(.serverError, "Kafka delivery failed: \(kafkaErrorDescription(message.pointee.err))", retriable: true))
    }
}

/// A Kafka producer, idempotent unless asked otherwise.
public final class KafkaProducer: Sendable {
    private let handle: KafkaHandle

    /// - Parameter idempotent: no duplicates or reordering on retries (the default); a health probe that only
    ///   needs one round trip can do without the producer-id handshake.
    public init(configuration: KafkaConfiguration, idempotent: Bool = true) throws {
        handle = try KafkaHandle(
            type: RD_KAFKA_PRODUCER,
            configuration: configuration,
            extra: [("enable.idempotence", idempotent ? "true" : "false"), ("acks", "all")],
            prepare: { rd_kafka_conf_set_dr_msg_cb($0, deliveryReportCallback) }
        )
    }

    public func metadata(timeout: Duration = .seconds(5)) async throws -> KafkaClusterMetadata {
        try await handle.metadata(timeout: timeout)
    }

    /// Sends one message and waits for the broker's acknowledgement (or `timeout`).
    public func send(topic: String, key: [UInt8]?, value: [UInt8], timeout: Duration = .seconds(10)) async throws -> KafkaDeliveryReport {
        guard !topic.isEmpty else { throw ProdReadyError(.invalidArgument, "Kafka topic name must not be empty") }
        return try await handle.executor.run { [handle] in
            guard let topicHandle = rd_kafka_topic_new(handle.pointer, topic, nil) else {
                throw ProdReadyError(.invalidArgument, "invalid Kafka topic '\(topic)': \(kafkaErrorDescription(rd_kafka_last_error()))")
            }
            defer { rd_kafka_topic_destroy(topicHandle) }
            let box = DeliveryBox()
            let opaque = Unmanaged.passRetained(box).toOpaque()
            var mutableValue = value
            let status: Int32 = mutableValue.withUnsafeMutableBytes { valueBytes in
                if let key {
                    return key.withUnsafeBytes { keyBytes in
                        rd_kafka_produce(topicHandle, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, valueBytes.baseAddress, valueBytes.count, keyBytes.baseAddress, keyBytes.count, opaque)
                    }
                }
                return rd_kafka_produce(topicHandle, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, valueBytes.baseAddress, valueBytes.count, nil, 0, opaque)
            }
            if status != 0 {
                Unmanaged<DeliveryBox>.fromOpaque(opaque).release()
                let code = rd_kafka_last_error()
                throw ProdReadyError(
                    code == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? .invalidArgument : .serverError,
                    "Kafka produce to '\(topic)' refused: \(kafkaErrorDescription(code))",
                    retriable: code == RD_KAFKA_RESP_ERR__QUEUE_FULL
                )
            }
            _ = rd_kafka_flush(handle.pointer, Int32(timeout.wholeMilliseconds))
            guard let result = box.result else {
                throw ProdReadyError(.timeout, "no delivery report for '\(topic)' within \(timeout)", retriable: true)
            }
            return try result.get()
        }
    }
}
