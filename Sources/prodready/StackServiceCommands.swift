import ArgumentParser
import Foundation
import OMSService
import ProdReadyCore
import ProdReadyInfra
import ProdReadyService

/// The reference services `prodready up --services` can start, what they need and how they are reached.
struct ServiceCatalogEntry {
    var name: String
    var processes: [String]
    var components: [Component]
    var baseURLVariable: String
    var apiProcess: String
    /// The environment variables of the service's settings start with this (`OMS_`).
    var settingsPrefix: String
}

enum ServiceCatalog {
    static let entries: [ServiceCatalogEntry] = [
        ServiceCatalogEntry(
            name: "oms", processes: OMSProcessKind.allCases.filter { $0 != .outboxRelay }.map(\.rawValue), components: [.postgres, .kafka, .redis, .s3], baseURLVariable: "OMS_BASE_URL",
            apiProcess: OMSProcessKind.api.rawValue, settingsPrefix: "OMS_"),
        // The audit flow: the OMS's outbox relay and the audit service. It audits the OMS, so it starts the OMS too.
        ServiceCatalogEntry(
            name: "audit", processes: [OMSProcessKind.outboxRelay.rawValue, "audit"], components: [.postgres, .nats], baseURLVariable: "AUDIT_BASE_URL",
            apiProcess: "audit", settingsPrefix: "AUDIT_"),
    ]

    static var allProcesses: [String] { entries.flatMap(\.processes) }

    /// `oms`, `all` or `none`, comma-separated.
    static func parse(_ text: String) throws -> [ServiceCatalogEntry] {
        let names = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        if names == ["none"] { return [] }
        if names == ["all"] { return entries }
        var chosen = try names.map { name in
            guard let entry = entries.first(where: { $0.name == name }) else {
                throw ValidationError("unknown service '\(name)'; one of \(entries.map(\.name).joined(separator: ", ")), all or none")
            }
            return entry
        }
        // The audit service audits the OMS: without it there is nothing to audit.
        if chosen.contains(where: { $0.name == "audit" }) && !chosen.contains(where: { $0.name == "oms" }) {
            chosen.insert(entries[0], at: 0)
        }
        return chosen
    }

    static func entry(ofProcess process: String) -> ServiceCatalogEntry? { entries.first { $0.processes.contains(process) } }
}

/// A component or a service process, for the commands that act on one of them.
struct TargetArgument: ExpressibleByArgument {
    enum Target {
        case component(Component)
        case process(String)
    }
    let target: Target
    init?(argument: String) {
        if let component = try? Component.parseList(argument), component.count == 1 {
            target = .component(component[0])
        } else if ServiceCatalog.allProcesses.contains(argument) {
            target = .process(argument)
        } else {
            return nil
        }
    }
    static var allValueStrings: [String] { Component.allCases.map(\.rawValue) + ServiceCatalog.allProcesses }
    static let help: ArgumentHelp = "A component (postgres, kafka, nats, redis, s3) or a service process (\(ServiceCatalog.allProcesses.joined(separator: ", ")))."
}

/// Starts `services`' processes on the up stack at `directory` (each at most once) and returns their base URLs.
func startServices(_ services: [ServiceCatalogEntry], stackDirectory directory: String, home: String, endpoints: StackEndpoints, guardDirectory: String? = nil) async throws -> [(String, String)] {
    guard !services.isEmpty else { return [] }
    let registry = StackServices(stackDirectory: directory)
    let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var environment: [String: String] = ["PRODREADY_HOME": home]
    for name in ["PATH", "HOME", "LANG", "LOG_LEVEL", "PRODREADY_KAFKA_LOG"] { environment[name] = ProcessInfo.processInfo.environment[name] }
    // A service's own settings (OMS_LEASE_SECONDS, OMS_KAFKA_PROPERTIES, …) reach its processes; the stack's
    // endpoints below win over anything inherited.
    for (name, value) in ProcessInfo.processInfo.environment where services.contains(where: { name.hasPrefix($0.settingsPrefix) }) {
        environment[name] = value
    }
    for entry in endpoints.environment { environment[entry.name] = entry.value }
    environment[ServiceSecrets.environmentVariable] = try ServiceSecrets.jwtSecret(home: home)
    try FileManager.default.createDirectory(atPath: directory + "/services", withIntermediateDirectories: true)
    var urls: [(String, String)] = []
    for service in services {
        var records: [ServiceProcessRecord] = []
        for process in service.processes {
            let port = try await registry.record(process)?.port ?? LoopbackPort.free()
            records.append(ServiceProcessRecord(
                name: process, service: service.name, identity: nil, port: port, executable: executable,
                arguments: ["serve", process, "--port", String(port)], environment: environment, logPath: "\(directory)/services/\(process).log", paused: false))
        }
        let clock = ContinuousClock()
        let began = clock.now
        progress("starting \(service.name): \(service.processes.joined(separator: ", "))")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for record in records {
                group.addTask {
                    let started = try await registry.start(record)
                    // An owned stack's processes die with their owner, SIGKILL included.
                    if let guardDirectory, let pid = started.identity?.pid { try OwnedProcessDirectory.adopt(processGroup: pid, in: guardDirectory) }
                }
            }
            try await group.waitForAll()
        }
        progress("\(service.name) ready in \(Int((clock.now - began).milliseconds)) ms")
        if let api = records.first(where: { $0.name == service.apiProcess }) { urls.append((service.baseURLVariable, api.url)) }
    }
    return urls
}

/// The base URLs of the services running on the up stack.
func runningServiceURLs(home: String) async -> [(String, String)] {
    let records = await StackServices(stackDirectory: StackLocations.upStack(home: home)).records()
    return ServiceCatalog.entries.compactMap { entry in
        records.first { $0.name == entry.apiProcess && $0.isRunning }.map { (entry.baseURLVariable, $0.url) }
    }
}

/// One line per service process: running or not, and what its `/health` says.
func serviceStatusLines(home: String) async -> (lines: [String], healthy: Bool) {
    let records = await StackServices(stackDirectory: StackLocations.upStack(home: home)).records()
    var lines: [String] = []
    var healthy = true
    for record in records {
        guard record.isRunning, let pid = record.identity?.pid else {
            lines.append("\(record.name): NOT RUNNING (start it with `prodready start \(record.name)`)")
            healthy = false
            continue
        }
        if record.paused {
            lines.append("\(record.name): PAUSED (pid \(pid), \(record.url))")
            healthy = false
            continue
        }
        let answer = await HealthProbe.httpStatus(url: record.url + "/health", timeout: .seconds(3))
        let ok = answer.status == 200
        healthy = healthy && ok
        lines.append("\(record.name): \(ok ? "healthy" : "UNHEALTHY") (pid \(pid), \(record.url)) \(answer.detail.prefix(300))")
    }
    return (lines, healthy)
}

/// Acts on one service process of the up stack.
func controlProcess(_ operation: ControlOperation, _ name: String, home: String) async throws {
    let registry = StackServices(stackDirectory: StackLocations.upStack(home: home))
    switch operation {
    case .start: try await registry.start(name)
    case .stop: try await registry.stop(name)
    case .kill: try await registry.kill(name)
    case .pause: try await registry.pause(name)
    case .resume: try await registry.resume(name)
    case .restart: try await registry.restart(name)
    }
}

/// A private embedded stack (postgres, kafka, redis, s3) with the OMS's processes on it, for a command that
/// breaks or loads it (`bench oms`, `chaos`). Everything is owned by this process (gone with it, SIGKILL
/// included) and torn down when `body` returns or throws.
struct PrivateOMSDeployment {
    let stack: NativeStack
    let services: StackServices
    let endpoints: StackEndpoints
    let baseURL: String
    let guardDirectory: String
    let home: String
    /// The audit API, when the deployment includes the audit flow.
    var auditBaseURL: String?

    /// A client with an admin token of `tenant`.
    func client(tenant: String) async throws -> ServiceClient {
        let token = try await TokenAuthority(secret: try ServiceSecrets.jwtSecret(home: home)).mint(subject: tenant, roles: ["admin"], tenant: tenant, ttl: .seconds(86_400 * 2))
        return ServiceClient(baseURL: baseURL, token: token)
    }
}

/// A private stack with the OMS, and with `audit` its outbox relay and the audit service too, for `body`; all of it
/// torn down afterwards.
func withPrivateOMSDeployment<Result>(
    home: String, label: String, audit: Bool = false, replicas: [String] = [], _ body: (PrivateOMSDeployment) async throws -> Result
) async throws -> Result {
    let stack = try NativeStack(directory: StackLocations.newOwnedStack(home: home, label: label), home: home, owned: true)
    let guardDirectory = "\(home)/deployments/\(UUID().uuidString.prefix(8).lowercased())-\(label)"
    let services = StackServices(stackDirectory: await stack.directory)
    func tearDown() async {
        try? await services.stopAll()
        try? await stack.teardown(removeData: true)
        try? FileManager.default.removeItem(atPath: guardDirectory)
    }
    let result: Result
    do {
        let components: [Component] = audit ? [.postgres, .kafka, .redis, .s3, .nats] : [.postgres, .kafka, .redis, .s3]
        progress("starting \(components.map(\.rawValue).joined(separator: ", "))")
        try await stack.ensure(components)
        try OwnedProcessDirectory.watch(guardDirectory)
        let endpoints = await stack.endpoints
        // Replicas (`oms-instance-worker@2`) join the OMS's processes.
        let catalog = try ServiceCatalog.parse(audit ? "oms,audit" : "oms").map { entry in
            var entry = entry
            if entry.name == "oms" { entry.processes += replicas }
            return entry
        }
        let urls = try await startServices(
            catalog, stackDirectory: await stack.directory, home: home, endpoints: endpoints, guardDirectory: guardDirectory)
        guard let baseURL = urls.first(where: { $0.0 == "OMS_BASE_URL" })?.1 else { throw ProdReadyError(.processFailed, "the OMS did not report its URL") }
        result = try await body(PrivateOMSDeployment(
            stack: stack, services: services, endpoints: endpoints, baseURL: baseURL, guardDirectory: guardDirectory, home: home,
            auditBaseURL: urls.first(where: { $0.0 == "AUDIT_BASE_URL" })?.1))
    } catch {
        await tearDown()
        throw error
    }
    await tearDown()
    return result
}
