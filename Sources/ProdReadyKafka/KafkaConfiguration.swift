import ProdReadyCore
import CRdKafka

/// Settings for a Kafka client. Typed fields cover what ProdReady uses; `properties` is the escape hatch for
/// any other librdkafka key.
public struct KafkaConfiguration: Sendable {
    /// `host:port[,host:port…]`.
    public var bootstrapServers: String
    public var clientID: String
    /// How long the broker waits for a heartbeat before evicting a group member.
    ///
    /// The Tansu broker holds the first JoinGroup for a fraction of this, so a short value makes consumer
    /// groups start in about a second instead of tens of seconds (see `embedded(bootstrapServers:)`).
    public var sessionTimeoutMilliseconds: Int?
    /// How long a produced message may wait for a broker's acknowledgement (retries included) before it fails
    /// with a retriable `timeout` (librdkafka's `message.timeout.ms`; its default is 5 minutes).
    public var deliveryTimeout: Duration?
    /// librdkafka properties applied last, overriding the typed fields.
    public var properties: [String: String]

    public init(bootstrapServers: String, clientID: String = "prodready", properties: [String: String] = [:]) {
        self.bootstrapServers = bootstrapServers
        self.clientID = clientID
        self.sessionTimeoutMilliseconds = nil
        self.deliveryTimeout = nil
        self.properties = properties
    }

    /// The profile for the embedded single-broker stack: short session timeout so groups form quickly, and a
    /// 30 s delivery timeout so a broker that stays down fails sends instead of holding them for 5 minutes.
    public static func embedded(bootstrapServers: String, clientID: String = "prodready") -> KafkaConfiguration {
        var configuration = KafkaConfiguration(bootstrapServers: bootstrapServers, clientID: clientID)
        configuration.sessionTimeoutMilliseconds = 3000
        configuration.deliveryTimeout = .seconds(30)
        return configuration
    }

    func validated() throws -> KafkaConfiguration {
        let servers = bootstrapServers.split(separator: ",").map { $0.trimmingWhitespace() }
        guard !servers.isEmpty, servers.allSatisfy({ server in
            guard let colon = server.lastIndex(of: ":"), colon != server.startIndex else { return false }
            return Int(server[server.index(after: colon)...]).map { (1...65535).contains($0) } ?? false
        }) else {
            throw ProdReadyError(.invalidArgument, "bootstrap servers must be host:port[,host:port…], got '\(bootstrapServers)'")
        }
        return self
    }

    /// - Parameter forConsumer: group settings apply to consumers only (librdkafka warns if a producer gets them).
    func librdkafkaProperties(forConsumer: Bool) -> [(String, String)] {
        var result: [(String, String)] = [
            ("bootstrap.servers", bootstrapServers),
            ("client.id", clientID),
        ]
        if !forConsumer, let deliveryTimeout {
            result.append(("message.timeout.ms", String(max(1, deliveryTimeout.wholeMilliseconds))))
        }
        if forConsumer, let sessionTimeoutMilliseconds {
            result.append(("session.timeout.ms", String(sessionTimeoutMilliseconds)))
            // librdkafka requires heartbeat.interval.ms < session.timeout.ms.
            result.append(("heartbeat.interval.ms", String(max(100, sessionTimeoutMilliseconds / 3))))
        }
        result.append(contentsOf: properties.sorted { $0.key < $1.key })
        return result
    }
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        var slice = self
        while slice.first?.isWhitespace == true { slice.removeFirst() }
        while slice.last?.isWhitespace == true { slice.removeLast() }
        return slice
    }
}

/// Builds a `rd_kafka_conf_t`; ownership passes to `rd_kafka_new` on success.
func makeNativeConfiguration(_ properties: [(String, String)]) throws -> OpaquePointer {
    guard let conf = rd_kafka_conf_new() else {
        throw ProdReadyError(.protocolError, "librdkafka could not allocate a configuration")
    }
    var errorBuffer = [CChar](repeating: 0, count: 512)
    for (key, value) in properties {
        let result = rd_kafka_conf_set(conf, key, value, &errorBuffer, errorBuffer.count)
        if result != RD_KAFKA_CONF_OK {
            rd_kafka_conf_destroy(conf)
            throw ProdReadyError(.invalidArgument, "Kafka property '\(key)': \(string(fromCBuffer: errorBuffer))")
        }
    }
    return conf
}

func kafkaErrorDescription(_ code: rd_kafka_resp_err_t) -> String {
    String(cString: rd_kafka_err2str(code))
}

/// The librdkafka version actually loaded at run time (not the headers the code was compiled against).
public var loadedLibrdkafkaVersion: String {
    String(cString: rd_kafka_version_str())
}
