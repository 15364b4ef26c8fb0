import Foundation
public import ProdReadyInfra

/// One thing a chaos run does to a deployment, and for how long.
public struct Fault: Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Action: Sendable, Hashable, Codable {
        /// Stop a component gracefully and start it again after the hold.
        case stopComponent(Component)
        /// SIGKILL a component and start it again after the hold.
        case killComponent(Component)
        /// SIGSTOP a component, SIGCONT after the hold.
        case pauseComponent(Component)
        /// SIGKILL a service process and start it again after the hold.
        case killProcess(String)
        /// SIGSTOP a service process, SIGCONT after the hold.
        case pauseProcess(String)
        /// SIGTERM a service process and start it again at once (the hold is the time it stays down).
        case restartProcess(String)
        /// Restart a process with `CHAOS_CRASH_POINT=<process>:<point>` armed, wait until it exits at the point
        /// (status 42), hold, then start it unarmed.
        case crashPoint(process: String, point: String)
    }

    public var action: Action
    public var hold: Duration

    public init(_ action: Action, hold: Duration) {
        self.action = action
        self.hold = hold
    }

    /// A short name for reports: `kafka down`, `oms-publisher killed`, `oms-instance-worker:after_claim`.
    public var name: String {
        switch action {
        case .stopComponent(let component): "\(component) down"
        case .killComponent(let component): "\(component) killed"
        case .pauseComponent(let component): "\(component) paused"
        case .killProcess(let process): "\(process) killed"
        case .pauseProcess(let process): "\(process) paused"
        case .restartProcess(let process): "\(process) restarted"
        case .crashPoint(let process, let point): "\(process):\(point) crash"
        }
    }

    public var description: String { "\(name), held \(Self.seconds(hold)) s" }

    static func seconds(_ duration: Duration) -> String {
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        return milliseconds % 1000 == 0 ? String(milliseconds / 1000) : String(Double(milliseconds) / 1000)
    }
}

/// The faults of a seeded run, drawn before anything runs so the whole plan is printed with its seed and
/// `PRODREADY_SEED=<seed>` replays it exactly.
public struct FaultSchedule: Sendable, Equatable, CustomStringConvertible {
    public let seed: UInt64
    public let faults: [Fault]

    public init(seed: UInt64, faults: [Fault]) {
        self.seed = seed
        self.faults = faults
    }

    /// `count` faults drawn uniformly from `kinds` (a kind may repeat, never twice in a row when there is a
    /// choice), each held `hold`.
    public static func draw(seed: UInt64, count: Int, from kinds: [Fault.Action], hold: Duration) -> FaultSchedule {
        precondition(!kinds.isEmpty, "a schedule needs at least one kind of fault")
        var random = SeededRandom(seed: seed)
        var faults: [Fault] = []
        var previous: Int?
        for _ in 0..<max(0, count) {
            var index = random.int(in: 0...(kinds.count - 1))
            if kinds.count > 1, index == previous { index = (index + 1 + random.int(in: 0...(kinds.count - 2))) % kinds.count }
            faults.append(Fault(kinds[index], hold: hold))
            previous = index
        }
        return FaultSchedule(seed: seed, faults: faults)
    }

    /// The plan, one fault per line, under a header that names the seed and how to replay it.
    public var description: String {
        var lines = ["fault schedule: seed \(seed) (replay with PRODREADY_SEED=\(seed)), \(faults.count) faults planned"]
        for (index, fault) in faults.enumerated() { lines.append("  \(index + 1). \(fault)") }
        return lines.joined(separator: "\n")
    }
}

/// What a chaos run may do to a deployment: the components of its stack and its service processes. TestSupport
/// implements it over a private stack and a test deployment; the `prodready chaos` command over the stack and
/// processes `prodready up` started. Each call returns once the action took effect (a started component answers,
/// a started process is ready).
public protocol ChaosControl: Sendable {
    func stop(_ component: Component) async throws
    func kill(_ component: Component) async throws
    func start(_ component: Component) async throws
    func pause(_ component: Component) async throws
    func resume(_ component: Component) async throws
    /// SIGTERM, waiting for the exit.
    func stopProcess(_ name: String) async throws
    func killProcess(_ name: String) async throws
    /// Starts the process again on its port and data, with `environment` added for this launch only, and waits
    /// until it is ready (`awaitReady` false: only until it runs, for a launch expected to crash).
    func startProcess(_ name: String, environment: [String: String], awaitReady: Bool) async throws
    func pauseProcess(_ name: String) async throws
    func resumeProcess(_ name: String) async throws
    /// The process's exit status once it exited, nil while it runs; waits at most `timeout`.
    func exitStatus(of name: String, within timeout: Duration) async throws -> Int32?
    /// The process's log file, when this control can read it (not through compose): where a slow convergence's
    /// excerpt comes from.
    func logPath(of name: String) async -> String?
}

extension ChaosControl {
    public func logPath(of name: String) async -> String? { nil }

    /// `ServiceLogExcerpt.warnings` of `name`'s log, for a report that needs to say what the process ran into;
    /// empty when the log cannot be read.
    public func recentWarnings(of name: String, limit: Int = 6) async -> [String] {
        // Read leniently: one invalid byte in a log must not hide it all.
        guard let path = await logPath(of: name), let data = FileManager.default.contents(atPath: path) else { return [] }
        return ServiceLogExcerpt.warnings(in: String(decoding: data, as: UTF8.self), limit: limit)
    }
}

/// Lines of a service process's log worth showing when something was slow.
public enum ServiceLogExcerpt {
    /// The last `limit` kinds of lines at level notice, warning, error or critical (each cut to 400 characters),
    /// leaving out the readiness probes' 503s while a process starts. Notices are the workers' group changes and
    /// the publisher's closed sequences: what a slow convergence waited for. Lines whose first 60 characters after
    /// the timestamp match are one kind: the latest is shown, with how often it came (a retry loop repeats one
    /// warning a hundred times, and would hide the different one before it).
    public static func warnings(in log: String, limit: Int) -> [String] {
        let lines = log.split(separator: "\n").filter { line in
            [" notice ", " warning ", " error ", " critical "].contains { line.contains($0) } && !line.contains("path=/health")
        }
        var kinds: [(key: Substring, line: Substring, count: Int)] = []
        for line in lines {
            let key = line.drop { $0 != " " }.prefix(60)
            if let index = kinds.firstIndex(where: { $0.key == key }) {
                let count = kinds[index].count + 1
                kinds.remove(at: index)
                kinds.append((key, line, count))
            } else {
                kinds.append((key, line, 1))
            }
        }
        return kinds.suffix(limit).map { String($0.line.prefix(400)) + ($0.count > 1 ? " (×\($0.count))" : "") }
    }
}
