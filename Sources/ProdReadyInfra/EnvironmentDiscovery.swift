import ProdReadyCore

/// What the environment says about where infrastructure is and how strict to be.
public struct InfrastructureSettings: Sendable {
    public var provider: ProviderKind
    /// Endpoints given by variables (only those set).
    public var configuredEndpoints: StackEndpoints
    /// Missing infrastructure fails tests instead of skipping them (`CI=true` or `PRODREADY_REQUIRE_INFRA=1`).
    public var isStrict: Bool
    /// Destructive tests may stop or kill components of a stack this process did not start.
    public var allowsDestructive: Bool

    public init(environment: [String: String]) throws {
        let providerText = environment[EnvironmentVariable.provider]?.lowercased() ?? "auto"
        guard let provider = ProviderKind(rawValue: providerText.isEmpty ? "auto" : providerText) else {
            throw ProdReadyError(.configuration, "\(EnvironmentVariable.provider)='\(providerText)' is not one of \(ProviderKind.allCases.map(\.rawValue).joined(separator: "|"))")
        }
        self.provider = provider
        isStrict = Self.isTrue(environment[EnvironmentVariable.continuousIntegration]) || Self.isTrue(environment[EnvironmentVariable.requireInfrastructure])
        allowsDestructive = Self.isTrue(environment[EnvironmentVariable.allowDestructive])

        var endpoints = StackEndpoints()
        func value(_ name: String) -> String? {
            guard let text = environment[name]?.trimmingCharacters(in: " "), !text.isEmpty else { return nil }
            return text
        }
        if let url = value(EnvironmentVariable.postgresURL) {
            guard url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") else {
                throw ProdReadyError(.configuration, "\(EnvironmentVariable.postgresURL) must look like postgresql://user:pass@host:port/db, got '\(redacted(url))'")
            }
            endpoints.postgresURL = url
        }
        endpoints.kafkaBootstrapServers = value(EnvironmentVariable.kafkaBootstrapServers)
        if let url = value(EnvironmentVariable.natsURL) {
            guard url.hasPrefix("nats://") || url.hasPrefix("tls://") else {
                throw ProdReadyError(.configuration, "\(EnvironmentVariable.natsURL) must look like nats://host:port, got '\(redacted(url))'")
            }
            endpoints.natsURL = url
        }
        endpoints.natsMonitorURL = value(EnvironmentVariable.natsMonitorURL)
        if let url = value(EnvironmentVariable.redisURL) {
            guard url.hasPrefix("redis://") else {
                throw ProdReadyError(.configuration, "\(EnvironmentVariable.redisURL) must look like redis://host:port, got '\(redacted(url))'")
            }
            endpoints.redisURL = url
        }
        if let url = value(EnvironmentVariable.s3EndpointURL) ?? value(EnvironmentVariable.s3EndpointURLAlias) {
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                throw ProdReadyError(.configuration, "\(EnvironmentVariable.s3EndpointURL) must look like http://host:port, got '\(url)'")
            }
            guard let accessKey = value(EnvironmentVariable.s3AccessKey), let secretKey = value(EnvironmentVariable.s3SecretKey) else {
                throw ProdReadyError(.configuration, "\(EnvironmentVariable.s3EndpointURL) is set but \(EnvironmentVariable.s3AccessKey) and \(EnvironmentVariable.s3SecretKey) are not")
            }
            endpoints.s3 = S3Endpoint(url: url, accessKey: accessKey, secretKey: secretKey, region: value(EnvironmentVariable.s3Region) ?? "us-east-1")
        }
        configuredEndpoints = endpoints
    }

    static func isTrue(_ value: String?) -> Bool {
        guard let value = value?.lowercased() else { return false }
        return ["1", "true", "yes", "on"].contains(value)
    }
}
