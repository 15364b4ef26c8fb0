import ProdReadyCore
public import ProdReadyInfra
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A server under test run as a real child process (the TestServer pattern): spawned with arguments,
/// environment and a data directory, awaited until ready, its output captured to a log, stopped with SIGTERM
/// or crashed with SIGKILL, and restarted on the same data directory.
public actor ServiceProcess {
    public struct Readiness: Sendable {
        let check: @Sendable (_ log: String) async -> Bool
        let describe: String

        /// Ready once the log contains `line`.
        public static func logLine(_ line: String) -> Readiness {
            Readiness(check: { $0.contains(line) }, describe: "log line '\(line)'")
        }

        /// Ready once something accepts TCP connections on 127.0.0.1:`port`.
        public static func tcpPort(_ port: Int) -> Readiness {
            Readiness(check: { _ in LoopbackPort.isAccepting(port) }, describe: "TCP port \(port)")
        }

        /// Ready once `probe` returns true.
        public static func custom(_ describe: String, _ probe: @escaping @Sendable () async -> Bool) -> Readiness {
            Readiness(check: { _ in await probe() }, describe: describe)
        }
    }

    public nonisolated let name: String
    public nonisolated let executable: String
    public nonisolated let arguments: [String]
    public nonisolated let environment: [String: String]
    public nonisolated let dataDirectory: String
    public nonisolated let logPath: String
    private let readiness: Readiness
    private var process: ProcessIdentity?
    /// How many times the process has been started.
    public private(set) var launches = 0

    /// Called with the pid (which leads its own process group) after every launch.
    let onLaunch: (@Sendable (Int32) throws -> Void)?

    public init(
        name: String, executable: String, arguments: [String], environment: [String: String] = [:], dataDirectory: String? = nil, readiness: Readiness,
        onLaunch: (@Sendable (Int32) throws -> Void)? = nil
    ) throws {
        self.onLaunch = onLaunch
        self.name = name
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        let directory = dataDirectory ?? "\(TestInfrastructure.shared.home)/services/\(uniqueName(name))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.dataDirectory = directory
        self.logPath = directory + ".log"
        self.readiness = readiness
    }

    /// An executable this package built, next to the running test binary (e.g. `.build/debug/prodready`).
    public static func builtExecutable(named name: String) throws -> String {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        throw ProdReadyError(.missingBinary, "built executable '\(name)' not found near \(CommandLine.arguments[0]); run `swift build` first")
    }

    public var pid: Int32? { process?.pid }
    public var isRunning: Bool { process?.isAlive ?? false }

    /// Starts the process and waits until it is ready (or exits, or `timeout` passes). `extraEnvironment` is
    /// added for this launch only (a crash point armed once); with `awaitReady` false it returns once launched.
    public func start(timeout: Duration = .seconds(30), extraEnvironment: [String: String] = [:], awaitReady: Bool = true) async throws {
        guard !isRunning else { return }
        var fullEnvironment = ProcessInfo.processInfo.environment
        fullEnvironment.merge(environment) { $1 }
        fullEnvironment.merge(extraEnvironment) { $1 }
        let logOffset = (try? FileManager.default.attributesOfItem(atPath: logPath)[.size] as? Int) ?? 0
        let child = try ChildProcess(executable: executable, arguments: arguments, environment: fullEnvironment, logPath: logPath)
        process = child.identity
        launches += 1
        try onLaunch?(child.identity.pid)
        guard awaitReady else { return }
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            let log = String((readLog() ?? "").utf8.dropFirst(logOffset)) ?? ""
            if await readiness.check(log) { return }
            if !child.identity.isAlive {
                process = nil
                throw ProdReadyError(.processFailed, "\(name) exited before it was ready (\(readiness.describe)); log tail:\n\(tail())")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        try? await ChildProcess.kill(child.identity)
        process = nil
        throw ProdReadyError(.timeout, "\(name) not ready (\(readiness.describe)) within \(timeout); log tail:\n\(tail())")
    }

    /// How a stop went: how the process ended and how long it took from the signal.
    public struct StopOutcome: Sendable {
        public var exit: ChildExit?
        public var took: Duration
    }

    /// Graceful stop: SIGTERM, SIGKILL after `gracePeriod`.
    @discardableResult
    public func stop(gracePeriod: Duration = .seconds(10)) async throws -> StopOutcome {
        let clock = ContinuousClock()
        let started = clock.now
        guard let process else { return StopOutcome(exit: nil, took: .zero) }
        try await ChildProcess.terminate(process, gracePeriod: gracePeriod)
        self.process = nil
        return StopOutcome(exit: ChildProcess.exit(of: process), took: clock.now - started)
    }

    /// How the last launch ended, polled for up to `timeout`; nil while it still runs (or if it never ran).
    public func exit(within timeout: Duration) async -> ChildExit? {
        guard let process else { return nil }
        return await ChildProcess.exit(of: process, within: timeout)
    }

    /// Crash: SIGKILL to the whole process group.
    public func kill() async throws {
        guard let process, process.isAlive else { throw ProdReadyError(.notRunning, "\(name) is not running") }
        try await ChildProcess.kill(process)
        self.process = nil
    }

    /// Sends any signal (SIGSTOP, SIGHUP, …) to the process group.
    public func send(signal: Int32) throws {
        guard let process, process.signalGroup(signal) else { throw ProdReadyError(.notRunning, "\(name) is not running") }
    }

    public func restart(timeout: Duration = .seconds(30)) async throws {
        try await stop()
        try await start(timeout: timeout)
    }

    public nonisolated func readLog() -> String? {
        try? String(contentsOfFile: logPath, encoding: .utf8)
    }

    public nonisolated func tail(lines: Int = 20) -> String {
        (readLog() ?? "(no log)").split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// Stops the process and removes its data directory and log.
    public func cleanUp() async throws {
        try await stop(gracePeriod: .seconds(5))
        try? FileManager.default.removeItem(atPath: dataDirectory)
        try? FileManager.default.removeItem(atPath: logPath)
    }
}
