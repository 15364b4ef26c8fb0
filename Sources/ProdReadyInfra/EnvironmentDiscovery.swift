public import ProdReadyCore

/// A variable of one component that the environment set but got wrong: it concerns that component alone.
public struct ConfigurationProblem: Sendable, Equatable {
    public var component: Component
    public var error: ProdReadyError
}

/// What the environment says about where infrastructure is and how strict to be.
///
/// Reading the environment never fails as a whole: strictness and the destructive opt-in are read first and
/// always, and each component's variables are checked on their own. A malformed `MINIO_ENDPOINT_URL` is a
/// problem for the tests that need S3 and nothing else — and in strict mode still a failure of those tests,
/// never a reason to fall back to lenient defaults.
public struct InfrastructureSettings: Sendable {
    public var provider: ProviderKind
    /// Endpoints given by variables (only those set and well-formed).
    public var configuredEndpoints: StackEndpoints
    /// Missing infrastructure fails tests instead of skipping them (`CI=true` or `PRODREADY_REQUIRE_INFRA=1`).
    public var isStrict: Bool
    /// Destructive tests may stop or kill components of a stack this process did not start.
    public var allowsDestructive: Bool
    /// Every component variable that was set but cannot be used, in the order the variables are read.
    public var problems: [ConfigurationProblem]
    /// An unreadable `PRODREADY_INFRA`: it concerns every component (the provider then counts as `auto`).
    public var providerError: ProdReadyError?

    public init(reading environment: [String: String]) {
        isStrict = Self.isTrue(environment[EnvironmentVariable.continuousIntegration]) || Self.isTrue(environment[EnvironmentVariable.requireInfrastructure])
        allowsDestructive = Self.isTrue(environment[EnvironmentVariable.allowDestructive])
        var problems: [ConfigurationProblem] = []
        func problem(_ component: Component, _ message: String) {
            problems.append(ConfigurationProblem(component: component, error: ProdReadyError(.configuration, message)))
        }

        let providerText = environment[EnvironmentVariable.provider]?.lowercased() ?? "auto"
        if let provider = ProviderKind(rawValue: providerText.isEmpty ? "auto" : providerText) {
            self.provider = provider
            providerError = nil
        } else {
            self.provider = .auto
            providerError = ProdReadyError(.configuration, "\(EnvironmentVariable.provider)='\(providerText)' is not one of \(ProviderKind.allCases.map(\.rawValue).joined(separator: "|"))")
        }

        var endpoints = StackEndpoints()
        func value(_ name: String) -> String? {
            guard let text = environment[name]?.trimmingCharacters(in: " "), !text.isEmpty else { return nil }
            return text
        }
        if let url = value(EnvironmentVariable.postgresURL) {
            if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
                endpoints.postgresURL = url
            } else {
                problem(.postgres, "\(EnvironmentVariable.postgresURL) must look like postgresql://user:pass@host:port/db, got '\(redacted(url))'")
            }
        }
        endpoints.kafkaBootstrapServers = value(EnvironmentVariable.kafkaBootstrapServers)
        if let url = value(EnvironmentVariable.natsURL) {
            if url.hasPrefix("nats://") || url.hasPrefix("tls://") {
                endpoints.natsURL = url
            } else {
                problem(.nats, "\(EnvironmentVariable.natsURL) must look like nats://host:port, got '\(redacted(url))'")
            }
        }
        endpoints.natsMonitorURL = value(EnvironmentVariable.natsMonitorURL)
        if let url = value(EnvironmentVariable.redisURL) {
            if url.hasPrefix("redis://") {
                endpoints.redisURL = url
            } else {
                problem(.redis, "\(EnvironmentVariable.redisURL) must look like redis://host:port, got '\(redacted(url))'")
            }
        }
        if let url = value(EnvironmentVariable.s3EndpointURL) ?? value(EnvironmentVariable.s3EndpointURLAlias) {
            let accessKey = value(EnvironmentVariable.s3AccessKey)
            let secretKey = value(EnvironmentVariable.s3SecretKey)
            if !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
                problem(.s3, "\(EnvironmentVariable.s3EndpointURL) must look like http://host:port, got '\(url)'")
            } else if let accessKey, let secretKey {
                endpoints.s3 = S3Endpoint(url: url, accessKey: accessKey, secretKey: secretKey, region: value(EnvironmentVariable.s3Region) ?? "us-east-1")
            } else {
                let unset = [(EnvironmentVariable.s3AccessKey, accessKey), (EnvironmentVariable.s3SecretKey, secretKey)].filter { $0.1 == nil }.map(\.0)
                problem(.s3, "\(EnvironmentVariable.s3EndpointURL) is set but \(unset.joined(separator: " and ")) \(unset.count == 1 ? "is" : "are") not; set both to the S3 identity's keys")
            }
        }
        configuredEndpoints = endpoints
        self.problems = problems
    }

    /// The settings, or the first problem in them: for callers that need the whole environment right.
    public init(environment: [String: String]) throws {
        self.init(reading: environment)
        if let error = providerError ?? problems.first?.error { throw error }
    }

    /// The provider's problem, else the first problem of one of `components`, or nil.
    public func configurationError(for components: [Component]) -> ProdReadyError? {
        providerError ?? problems.first { components.contains($0.component) }?.error
    }

    static func isTrue(_ value: String?) -> Bool {
        guard let value = value?.lowercased() else { return false }
        return ["1", "true", "yes", "on"].contains(value)
    }
}
