import Foundation
import OMSChaos
import ProdReadyChaos
import ProdReadyCore
import ProdReadyInfra
import ProdReadyService

/// `ChaosControl` over a deployment of the user's own that docker compose runs: its components and the OMS's
/// processes are compose services, stopped, started, killed and paused through `docker compose`. Two things the
/// scenarios need are out of reach there, and refused with a reason instead of pretended: starting a process with a
/// crash point armed for one launch, and reading a process's exit status.
struct ComposeChaosControl: ChaosControl {
    let compose: ComposeInfrastructure
    /// Compose service names by component (`postgres`, `kafka`, `redis`, `s3`) or process name; unnamed ones keep
    /// compose/infra.yml's names (`minio` for s3) and the process names.
    let serviceNames: [String: String]
    /// Where the components answer, to wait for one started again.
    let endpoints: StackEndpoints
    /// The OMS's API, to wait for it started again.
    let omsBaseURL: String

    func service(_ component: Component) -> String {
        serviceNames[component.rawValue] ?? (component == .s3 ? "minio" : component.rawValue)
    }
    func service(_ process: String) -> String { serviceNames[process] ?? process }

    func stop(_ component: Component) async throws { try await compose.compose(["stop", service(component)]) }
    func kill(_ component: Component) async throws { try await compose.compose(["kill", "-s", "SIGKILL", service(component)]) }
    func start(_ component: Component) async throws {
        try await compose.compose(["start", service(component)])
        try await poll("\(component.rawValue) (compose service \(service(component))) answering again") {
            let health = await HealthProbe.check(component, endpoints: endpoints)
            return health.isHealthy ? nil : health.detail
        }
    }
    func pause(_ component: Component) async throws { try await compose.compose(["pause", service(component)]) }
    func resume(_ component: Component) async throws { try await compose.compose(["unpause", service(component)]) }

    func stopProcess(_ name: String) async throws { try await compose.compose(["stop", service(name)]) }
    func killProcess(_ name: String) async throws { try await compose.compose(["kill", "-s", "SIGKILL", service(name)]) }
    func startProcess(_ name: String, environment: [String: String], awaitReady: Bool) async throws {
        guard environment.values.allSatisfy(\.isEmpty) else {
            throw ProdReadyError(
                .notControllable,
                "cannot start \(name) with \(environment.keys.sorted().joined(separator: ", ")) for one launch on a compose deployment; arm crash points in its compose file instead")
        }
        // `up --wait` returns once the service is healthy (or running, without a healthcheck).
        try await compose.compose(["up", "-d", "--no-deps"] + (awaitReady ? ["--wait"] : []) + [service(name)])
        if awaitReady, name == OMSProcesses.api {
            try await poll("\(name) ready at \(omsBaseURL)/health/ready") {
                let answer = try? await ServiceClient(baseURL: omsBaseURL).get("/health/ready")
                return answer?.status == 200 ? nil : "answered \(answer.map { String($0.status) } ?? "nothing")"
            }
        }
    }
    func pauseProcess(_ name: String) async throws { try await compose.compose(["pause", service(name)]) }
    func resumeProcess(_ name: String) async throws { try await compose.compose(["unpause", service(name)]) }
    func exitStatus(of name: String, within timeout: Duration) async throws -> Int32? {
        throw ProdReadyError(.notControllable, "the exit status of \(name) is not readable through docker compose")
    }

    /// Polls `check` (nil when done, else what is still missing) every 250 ms for at most a minute.
    private func poll(_ what: String, _ check: () async -> String?) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(60)
        var missing = "not checked yet"
        while clock.now < deadline {
            guard let still = await check() else { return }
            missing = still
            try await Task.sleep(for: .milliseconds(250))
        }
        throw ProdReadyError(.timeout, "waiting for \(what): still \(missing) after 60 s")
    }
}

/// What `prodready chaos --target external` reads from the environment: the OMS deployment's API and secret, the
/// stores it uses and where in them it keeps its data.
struct ExternalChaosDeployment {
    let omsBaseURL: String
    let jwtSecret: String
    let endpoints: StackEndpoints
    let data: OMSDataLocation

    static func read(_ environment: [String: String]) throws -> ExternalChaosDeployment {
        func value(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        var missing: [String] = []
        let base = value("OMS_BASE_URL")
        let secret = value(ServiceSecrets.environmentVariable)
        if base == nil { missing.append("OMS_BASE_URL") }
        if secret == nil { missing.append(ServiceSecrets.environmentVariable) }
        let settings = InfrastructureSettings(reading: environment)
        let endpoints = settings.configuredEndpoints
        if endpoints.postgresURL == nil { missing.append("POSTGRES_URL") }
        if endpoints.kafkaBootstrapServers == nil { missing.append("KAFKA_BOOTSTRAP_SERVERS") }
        if endpoints.redisURL == nil { missing.append("REDIS_URL") }
        if endpoints.s3 == nil { missing.append("MINIO_ENDPOINT_URL (or S3_ENDPOINT_URL) with S3_ACCESS_KEY and S3_SECRET_KEY") }
        guard let base, let secret, missing.isEmpty else {
            throw ProdReadyError(.configuration, "--target external needs \(missing.joined(separator: ", ")) (the OMS deployment and the stores it uses)")
        }
        return ExternalChaosDeployment(omsBaseURL: base, jwtSecret: secret, endpoints: endpoints, data: OMSDataLocation(environment: environment))
    }
}
