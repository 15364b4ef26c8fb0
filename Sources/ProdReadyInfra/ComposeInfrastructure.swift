import ProdReadyCore

/// `compose/infra.yml` driven through `docker compose`. Ports are the fixed ones the file publishes.
///
/// Untested on machines without a Docker engine (ProdReady's own CI has none); kept in step with the native
/// stack so the same suites run against the usual images.
public struct ComposeInfrastructure: Infrastructure {
    public let composeFile: String
    public let projectName: String

    public init(composeFile: String, projectName: String = "prodready") {
        self.composeFile = composeFile
        self.projectName = projectName
    }

    /// The ports `compose/infra.yml` publishes on 127.0.0.1.
    public static let ports: [Component: Int] = [.postgres: 55432, .kafka: 59092, .nats: 54222, .redis: 56379, .s3: 59000]
    public static let natsMonitorPort = 58222

    /// Compose service names, which are also the component names.
    static func service(_ component: Component) -> String {
        component == .s3 ? "minio" : component.rawValue
    }

    public var kind: ProviderKind { .compose }
    public var supportedOperations: Set<ControlOperation> { Set(ControlOperation.allCases) }

    public func endpoints() async -> StackEndpoints {
        var endpoints = StackEndpoints()
        endpoints.postgresURL = "postgresql://prodready:prodready@127.0.0.1:\(Self.ports[.postgres]!)/prodready"
        endpoints.kafkaBootstrapServers = "127.0.0.1:\(Self.ports[.kafka]!)"
        endpoints.natsURL = "nats://127.0.0.1:\(Self.ports[.nats]!)"
        endpoints.natsMonitorURL = "http://127.0.0.1:\(Self.natsMonitorPort)"
        endpoints.redisURL = "redis://127.0.0.1:\(Self.ports[.redis]!)"
        endpoints.s3 = S3Endpoint(url: "http://127.0.0.1:\(Self.ports[.s3]!)", accessKey: "prodready", secretKey: "prodready-secret", region: "us-east-1")
        return endpoints
    }

    public func perform(_ operation: ControlOperation, on component: Component) async throws {
        let service = Self.service(component)
        let arguments: [String] = switch operation {
        case .start: ["start", service]
        case .stop: ["stop", service]
        case .kill: ["kill", "-s", "SIGKILL", service]
        case .pause: ["pause", service]
        case .resume: ["unpause", service]
        case .restart: ["restart", service]
        }
        try await compose(arguments)
    }

    public func up(_ components: [Component]) async throws {
        try await compose(["up", "-d", "--wait"] + components.map(Self.service))
    }

    public func down() async throws {
        try await compose(["down", "-v"])
    }

    public func health(_ component: Component) async -> ComponentHealth {
        await HealthProbe.check(component, endpoints: await endpoints())
    }

    public func logs(_ component: Component, lines: Int) async throws -> String {
        let logPath = "/tmp/prodready-compose-logs.\(ProcessIdentity(pid: getpidValue()).pid).log"
        try await compose(["logs", "--no-color", "--tail", String(lines), Self.service(component)], logPath: logPath)
        return readTextFile(logPath) ?? ""
    }

    /// Runs `docker compose -p <project> -f <file> <arguments>` to completion.
    public func compose(_ arguments: [String], logPath: String? = nil) async throws {
        guard let docker = findInPath("docker") else {
            throw ProdReadyError(.missingBinary, "docker not found: the compose provider needs Docker with the compose plugin")
        }
        let log = logPath ?? "/tmp/prodready-compose.log"
        do {
            try await runToCompletion(docker, ["compose", "-p", projectName, "-f", composeFile] + arguments, logPath: log)
        } catch let error as ProdReadyError {
            throw ProdReadyError(.processFailed, "docker compose \(arguments.joined(separator: " ")) failed (is a Docker engine running?)", underlying: error)
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
func getpidValue() -> Int32 { getpid() }
