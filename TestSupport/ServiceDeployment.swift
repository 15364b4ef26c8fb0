import Foundation
public import ProdReadyCore
public import ProdReadyInfra
import ProdReadyService

/// What a deployment of one reference service is: its processes (each run as `prodready serve <name>`), which one
/// serves the API, the variable that points at an external deployment instead, and the settings that keep this
/// deployment's data apart from every other one on the same stack.
public struct ServiceDeploymentPlan: Sendable {
    public var service: String
    public var baseURLVariable: String
    public var processes: [String]
    public var apiProcess: String
    public var environment: [String: String]

    public init(service: String, baseURLVariable: String, processes: [String], apiProcess: String, environment: [String: String]) {
        self.service = service
        self.baseURLVariable = baseURLVariable
        self.processes = processes
        self.apiProcess = apiProcess
        self.environment = environment
    }
}

/// A running deployment: the API's base URL, a handle per process (kill, terminate, pause, resume, restart on the
/// same port and data), and tokens signed with the deployment's secret. External deployments have a URL and no
/// handles: asking for one fails with `not_controllable`.
public final class ServiceDeployment: Sendable {
    public let plan: ServiceDeploymentPlan
    public let baseURL: String
    public let isExternal: Bool
    let handles: [String: ServiceProcess]
    let ports: [String: Int]
    let secret: String

    init(plan: ServiceDeploymentPlan, baseURL: String, isExternal: Bool, handles: [String: ServiceProcess], ports: [String: Int], secret: String) {
        self.plan = plan
        self.baseURL = baseURL
        self.isExternal = isExternal
        self.handles = handles
        self.ports = ports
        self.secret = secret
    }

    /// The handle of one process.
    public func process(_ name: String) throws -> ServiceProcess {
        guard let handle = handles[name] else {
            throw ProdReadyError(.notControllable, isExternal ? "\(plan.service) is an external deployment (\(plan.baseURLVariable)); its processes cannot be controlled" : "no process '\(name)' in this deployment")
        }
        return handle
    }

    /// The HTTP address of one process (health, readiness and metrics answer on every process).
    public func url(of name: String) throws -> String {
        guard let port = ports[name] else { throw ProdReadyError(.notControllable, "no address known for '\(name)'") }
        return "http://127.0.0.1:\(port)"
    }

    /// A bearer token for `roles` in `tenant`, signed with the deployment's secret.
    public func token(roles: [String], tenant: String, subject: String = "prodready-tests", ttl: Duration = .seconds(3600)) async throws -> String {
        try await TokenAuthority(secret: secret).mint(subject: subject, roles: roles, tenant: tenant, ttl: ttl)
    }

    /// A client of the API holding a token for `roles` in `tenant`.
    public func client(roles: [String] = ["admin"], tenant: String) async throws -> ServiceClient {
        ServiceClient(baseURL: baseURL, token: try await token(roles: roles, tenant: tenant))
    }
}

/// Starts `plan`'s processes on the stack behind `endpoints` (or uses `<baseURLVariable>` when it is set), waits
/// until every process is ready, runs `body`, and stops them (SIGTERM, then SIGKILL). The processes are owned like
/// stacks: a watchdog kills them if the test process dies first, SIGKILL included.
public func withServiceDeployment<Result: Sendable>(
    _ plan: ServiceDeploymentPlan,
    endpoints: StackEndpoints,
    environment: [String: String]? = nil,
    _ body: (ServiceDeployment) async throws -> Result
) async throws -> Result {
    let environment = environment ?? ProcessInfo.processInfo.environment
    let home = TestInfrastructure.shared.home
    if let external = environment[plan.baseURLVariable], !external.isEmpty {
        guard let secret = environment[ServiceSecrets.environmentVariable], !secret.isEmpty else {
            throw ProdReadyError(.configuration, "\(plan.baseURLVariable) is set but \(ServiceSecrets.environmentVariable) is not: the tests need the deployment's JWT secret to sign tokens")
        }
        return try await body(ServiceDeployment(plan: plan, baseURL: external, isExternal: true, handles: [:], ports: [:], secret: secret))
    }
    let secret = try ServiceSecrets.jwtSecret(home: home)
    let executable = try ServiceProcess.builtExecutable(named: "prodready")
    // A deployment is several processes on two cores: only a few run at once, so the whole run stays reliable. A
    // deployment started inside another (the audit service beside the OMS it audits) shares its slot.
    if !DeploymentSlots.isHeld {
        await DeploymentSlots.shared.acquire()
        defer { Task { await DeploymentSlots.shared.release() } }
        return try await DeploymentSlots.$isHeld.withValue(true) { try await withServiceDeployment(plan, endpoints: endpoints, environment: environment, body) }
    }
    let directory = "\(home)/deployments/\(uniqueName(plan.service))"
    try OwnedProcessDirectory.watch(directory)
    var processEnvironment = plan.environment
    for (name, value) in endpoints.environment { processEnvironment[name] = value }
    processEnvironment[ServiceSecrets.environmentVariable] = secret
    processEnvironment["PRODREADY_HOME"] = home
    var handles: [String: ServiceProcess] = [:]
    var ports: [String: Int] = [:]
    for name in plan.processes {
        let port = try LoopbackPort.free()
        ports[name] = port
        // At the lowest priority: on two cores, busy service processes must not delay the clocks of the tests
        // that run beside them (a 2 s operation timeout measured 4.7 s at normal priority, 4.2 s at nice 10).
        // `nice` execs in place, so the pid is the service's.
        let niceExecutable = "/usr/bin/nice"
        let (program, arguments) = FileManager.default.isExecutableFile(atPath: niceExecutable)
            ? (niceExecutable, ["-n", "19", executable, "serve", name, "--port", String(port)])
            : (executable, ["serve", name, "--port", String(port)])
        handles[name] = try ServiceProcess(
            name: name, executable: program, arguments: arguments, environment: processEnvironment,
            dataDirectory: "\(directory)/\(name)", readiness: .readyEndpoint(port: port), onLaunch: { pid in try OwnedProcessDirectory.adopt(processGroup: pid, in: directory) })
    }
    let deployment = ServiceDeployment(plan: plan, baseURL: "http://127.0.0.1:\(ports[plan.apiProcess] ?? 0)", isExternal: false, handles: handles, ports: ports, secret: secret)
    return try await runThenCleanUp({
        try await withThrowingTaskGroup(of: Void.self) { group in
            for handle in handles.values { group.addTask { try await handle.start(timeout: .seconds(90)) } }
            try await group.waitForAll()
        }
        return try await body(deployment)
    }, cleanUp: {
        for handle in handles.values { try? await handle.stop(gracePeriod: .seconds(10)) }
        try? FileManager.default.removeItem(atPath: directory)
    })
}

extension ServiceProcess.Readiness {
    /// Ready once `GET /health/ready` on the port answers 200.
    public static func readyEndpoint(port: Int) -> Self {
        .custom("GET http://127.0.0.1:\(port)/health/ready answers 200") {
            (try? await ServiceClient(baseURL: "http://127.0.0.1:\(port)").request("GET", "/health/ready", timeout: .seconds(1)).status) == 200
        }
    }
}

/// How many service deployments this test process runs at once (`PRODREADY_DEPLOYMENT_LIMIT`, default 1).
/// SPEC-services suggests 2; on this project's two cores, two deployments of four debug processes each, with
/// the S3 and Postgres traffic they cause, stretched the timing tests running beside them past their bounds.
/// A test waiting for a slot has not started its processes, so nothing it measures is running yet.
actor DeploymentSlots {
    /// True inside a deployment's body: a deployment nested in it runs in the same slot.
    @TaskLocal static var isHeld = false
    static let shared = DeploymentSlots(limit: ProcessInfo.processInfo.environment["PRODREADY_DEPLOYMENT_LIMIT"].flatMap(Int.init).map { max(1, $0) } ?? 1)
    private var available: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) { available = limit }

    func acquire() async {
        if available > 0 {
            available -= 1
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty {
            available += 1
        } else {
            waiters.removeFirst().resume()
        }
    }
}
