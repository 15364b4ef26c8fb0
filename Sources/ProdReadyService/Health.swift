public import Hummingbird
public import ProdReadyCore
import Synchronization

/// One dependency `/health` checks: critical ones make the service unhealthy (503), others only degraded.
public struct HealthCheck: Sendable {
    public var name: String
    public var critical: Bool
    /// Throws when the dependency is not usable; returns details shown next to the status (counts, lag).
    public var report: @Sendable () async throws -> [String: JSONValue]

    public init(_ name: String, critical: Bool = true, check: @escaping @Sendable () async throws -> Void) {
        self.name = name
        self.critical = critical
        report = {
            try await check()
            return [:]
        }
    }

    /// A check whose passing result carries details.
    public static func reporting(_ name: String, critical: Bool = true, _ report: @escaping @Sendable () async throws -> [String: JSONValue]) -> HealthCheck {
        var check = HealthCheck(name, critical: critical) {}
        check.report = report
        return check
    }
}

/// What must have happened before `/health/ready` answers 200: migrations ran, consumers joined, … Each is
/// named, so a 503 says what is still pending.
public final class Readiness: Sendable {
    private let pending: Mutex<Set<String>>

    public init(waitingFor conditions: Set<String>) { pending = Mutex(conditions) }

    public func satisfy(_ condition: String) { _ = pending.withLock { $0.remove(condition) } }
    public func unsatisfy(_ condition: String) { _ = pending.withLock { $0.insert(condition) } }
    public var waitingFor: [String] { pending.withLock { $0.sorted() } }
    public var isReady: Bool { pending.withLock { $0.isEmpty } }
}

/// How a service wraps its health document: SPEC-services' plain form, or the seed's `{"status":"success","data":…}`.
public enum HealthEnvelope: Sendable {
    case plain
    case successData
}

extension ServiceRouter {
    /// Adds `GET /health` and `GET /health/ready`. Each check gets `timeout`; all run at once.
    public func addHealthRoutes(checks: [HealthCheck], readiness: Readiness, envelope: HealthEnvelope = .plain, timeout: Duration = .seconds(2)) {
        add(.get, "/health", summary: "Dependency checks: healthy, degraded or unhealthy (503)", role: nil, responses: [200: "healthy or degraded", 503: "unhealthy"]) { _, _ in
            let results = await withTaskGroup(of: (String, Bool, String?, Double, [String: JSONValue]).self) { group in
                for check in checks {
                    group.addTask {
                        let clock = ContinuousClock()
                        let started = clock.now
                        var reason: String?
                        var details: [String: JSONValue] = [:]
                        do {
                            details = try await withThrowingTaskGroup(of: [String: JSONValue].self) { race in
                                race.addTask { try await check.report() }
                                race.addTask {
                                    try await Task.sleep(for: timeout)
                                    throw HealthTimeout(timeout: timeout)
                                }
                                let first = try await race.next() ?? [:]
                                race.cancelAll()
                                return first
                            }
                        } catch {
                            reason = "\(error)"
                        }
                        let elapsed = clock.now - started
                        let milliseconds = Double(elapsed.components.seconds) * 1_000 + Double(elapsed.components.attoseconds) / 1e15
                        return (check.name, check.critical, reason, (milliseconds * 100).rounded() / 100, details)
                    }
                }
                var all: [(String, Bool, String?, Double, [String: JSONValue])] = []
                for await result in group { all.append(result) }
                return all
            }
            var document: [String: JSONValue] = [:]
            var status = "healthy"
            for (name, critical, reason, latency, details) in results {
                var entry: [String: JSONValue] = details
                entry["status"] = reason == nil ? "healthy" : (critical ? "unhealthy" : "degraded")
                entry["latency_ms"] = .double(latency)
                if let reason {
                    entry["reason"] = .string(reason)
                    status = critical ? "unhealthy" : (status == "healthy" ? "degraded" : status)
                }
                document[name] = .object(entry)
            }
            let health: JSONValue = ["status": .string(status), "checks": .object(document)]
            let body: JSONValue = envelope == .plain ? health : ["status": "success", "data": health]
            return Response.json(body, status: status == "unhealthy" ? .serviceUnavailable : .ok)
        }
        add(.get, "/health/ready", summary: "200 once migrations ran and consumers joined, 503 before", role: nil, responses: [200: "ready", 503: "not yet"]) { _, _ in
            let waiting = readiness.waitingFor
            if waiting.isEmpty { return Response.json(["ready": true]) }
            return Response.json(["ready": false, "waiting_for": .array(waiting.map { .string($0) })], status: .serviceUnavailable, headers: [.retryAfter: "1"])
        }
    }
}

struct HealthTimeout: Error, CustomStringConvertible {
    var timeout: Duration
    var description: String { "no answer within \(timeout)" }
}

extension ServiceRouter {
    /// `GET /api/v1/system/config`: the settings the service's design relies on, as the running process holds them
    /// (never secrets), so a configuration check compares live values instead of what a deployment file says.
    public func addConfigurationRoute(role: ServiceRole, _ document: @escaping @Sendable () async -> JSONValue) {
        add(.get, "/api/v1/system/config", summary: "The running process's effective settings (no secrets), for configuration checks", role: role, responses: [200: "the settings"]) { _, _ in
            Response.json(await document())
        }
    }
}

extension Duration {
    /// Seconds as a JSON number, for configuration documents.
    public var jsonSeconds: JSONValue {
        .double(Double(components.seconds) + Double(components.attoseconds) / 1e18)
    }
}
