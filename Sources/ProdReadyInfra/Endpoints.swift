/// S3 address and credentials.
public struct S3Endpoint: Codable, Sendable, Equatable {
    public var url: String
    public var accessKey: String
    public var secretKey: String
    public var region: String

    public init(url: String, accessKey: String, secretKey: String, region: String) {
        self.url = url
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.region = region
    }
}

/// How to reach each component; nil where a component is not part of the stack.
public struct StackEndpoints: Codable, Sendable, Equatable {
    public var postgresURL: String?
    public var kafkaBootstrapServers: String?
    public var natsURL: String?
    /// The NATS monitoring endpoint (`/healthz`, `/jsz`), when known.
    public var natsMonitorURL: String?
    public var redisURL: String?
    public var s3: S3Endpoint?

    public init() {}

    public func has(_ component: Component) -> Bool {
        switch component {
        case .postgres: postgresURL != nil
        case .kafka: kafkaBootstrapServers != nil
        case .nats: natsURL != nil
        case .redis: redisURL != nil
        case .s3: s3 != nil
        }
    }

    public var components: [Component] { Component.allCases.filter(has).sorted() }

    /// The variables a suite reads, with the values of this stack, in a stable order.
    public var environment: [(name: String, value: String)] {
        var result: [(String, String)] = []
        if let postgresURL { result.append((EnvironmentVariable.postgresURL, postgresURL)) }
        if let kafkaBootstrapServers { result.append((EnvironmentVariable.kafkaBootstrapServers, kafkaBootstrapServers)) }
        if let natsURL { result.append((EnvironmentVariable.natsURL, natsURL)) }
        if let natsMonitorURL { result.append((EnvironmentVariable.natsMonitorURL, natsMonitorURL)) }
        if let redisURL { result.append((EnvironmentVariable.redisURL, redisURL)) }
        if let s3 {
            result.append((EnvironmentVariable.s3EndpointURL, s3.url))
            result.append((EnvironmentVariable.s3AccessKey, s3.accessKey))
            result.append((EnvironmentVariable.s3SecretKey, s3.secretKey))
            result.append((EnvironmentVariable.s3Region, s3.region))
        }
        return result
    }

    /// `export NAME='value'` lines a shell can `eval`.
    public var exportLines: [String] {
        environment.map { "export \($0.name)=\(shellQuoted($0.value))" }
    }
}

/// The environment variables ProdReady reads. Names follow the seed documents where one existed.
public enum EnvironmentVariable {
    public static let postgresURL = "POSTGRES_URL"
    public static let kafkaBootstrapServers = "KAFKA_BOOTSTRAP_SERVERS"
    public static let natsURL = "NATS_URL"
    public static let natsMonitorURL = "NATS_MONITOR_URL"
    public static let redisURL = "REDIS_URL"
    public static let s3EndpointURL = "MINIO_ENDPOINT_URL"
    public static let s3EndpointURLAlias = "S3_ENDPOINT_URL"
    public static let s3AccessKey = "S3_ACCESS_KEY"
    public static let s3SecretKey = "S3_SECRET_KEY"
    public static let s3Region = "S3_REGION"
    public static let provider = "PRODREADY_INFRA"
    public static let requireInfrastructure = "PRODREADY_REQUIRE_INFRA"
    public static let allowDestructive = "PRODREADY_ALLOW_DESTRUCTIVE"
    public static let home = "PRODREADY_HOME"
    public static let continuousIntegration = "CI"

    /// The variable that names `component`'s endpoint.
    public static func name(for component: Component) -> String {
        switch component {
        case .postgres: postgresURL
        case .kafka: kafkaBootstrapServers
        case .nats: natsURL
        case .redis: redisURL
        case .s3: s3EndpointURL
        }
    }
}

func shellQuoted(_ value: String) -> String {
    "'" + value.replacingAll("'", with: "'\\''") + "'"
}
