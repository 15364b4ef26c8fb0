import ProdReadyCore
import CRdKafka
#if canImport(Glibc)
import Glibc
#endif

/// Where a produced message landed.
public struct KafkaDeliveryReport: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
}

/// A consumed message.
public struct KafkaMessage: Sendable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: [UInt8]?
    public var value: [UInt8]
    public var headers: [KafkaHeader] = []

    public init(topic: String, partition: Int32, offset: Int64, key: [UInt8]?, value: [UInt8], headers: [KafkaHeader] = []) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
    }
}

/// What a broker reports about the cluster.
public struct KafkaClusterMetadata: Sendable {
    public var brokerCount: Int
    public var topics: [String: Int]
}

/// One librdkafka handle. Each handle is only touched from its own `BlockingExecutor`, so it is never used by
/// two threads at once and blocking calls never run on the cooperative pool.
final class KafkaHandle: @unchecked Sendable {
    // @unchecked Sendable: `pointer` is only dereferenced inside `executor`'s serial queue.
    let pointer: OpaquePointer
    let executor: BlockingExecutor
    /// What librdkafka's callbacks reach through the configuration's opaque pointer; kept alive until the
    /// handle is destroyed, since `rd_kafka_destroy` itself may still call back (a consumer's final revoke).
    private let callbackContext: (any Sendable & AnyObject)?

    init(
        type: rd_kafka_type_t,
        configuration: KafkaConfiguration,
        extra: [(String, String)],
        callbackContext: (any Sendable & AnyObject)? = nil,
        prepare: (OpaquePointer) -> Void = { _ in }
    ) throws {
        let conf = try makeNativeConfiguration(try configuration.validated().librdkafkaProperties(forConsumer: type == RD_KAFKA_CONSUMER) + extra)
        prepare(conf)
        // librdkafka logs every refused connection to stderr; failures reach callers as errors instead.
        // PRODREADY_KAFKA_LOG=1 restores its own log for debugging.
        if getenv("PRODREADY_KAFKA_LOG") == nil {
            rd_kafka_conf_set_log_cb(conf, silentLog)
        }
        var errorBuffer = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(type, conf, &errorBuffer, errorBuffer.count) else {
            rd_kafka_conf_destroy(conf)
            throw ProdReadyError(.invalidArgument, "librdkafka refused the configuration: \(string(fromCBuffer: errorBuffer))")
        }
        pointer = handle
        executor = BlockingExecutor(label: "kafka.\(configuration.clientID)")
        self.callbackContext = callbackContext
    }

    func metadata(timeout: Duration) async throws -> KafkaClusterMetadata {
        try await executor.run { [self] in
            let pointer = self.pointer
            var metadataPointer: UnsafePointer<rd_kafka_metadata>?
            let code = rd_kafka_metadata(pointer, 1, nil, &metadataPointer, Int32(timeout.wholeMilliseconds))
            guard code == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata = metadataPointer else {
                throw ProdReadyError(.connectionFailed, "Kafka metadata request failed: \(kafkaErrorDescription(code))", retriable: true)
            }
            defer { rd_kafka_metadata_destroy(metadata) }
            var topics: [String: Int] = [:]
            for index in 0..<Int(metadata.pointee.topic_cnt) {
                let topic = metadata.pointee.topics[index]
                topics[String(cString: topic.topic)] = Int(topic.partition_cnt)
            }
            return KafkaClusterMetadata(brokerCount: Int(metadata.pointee.broker_cnt), topics: topics)
        }
    }

    deinit {
        // rd_kafka_destroy can block (it flushes and closes); never on the thread that dropped the last reference.
        let handle = SendableHandle(pointer)
        executor.submit { [callbackContext] in
            rd_kafka_destroy(handle.pointer)
            withExtendedLifetime(callbackContext) {}
        }
    }
}

private let silentLog: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Void = { _, _, _, _ in }

