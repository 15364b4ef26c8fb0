import Foundation
import ProdReadyCore
#if canImport(Glibc)
import Glibc
#endif

/// One reference-service process started on a `prodready up` stack, as `<stack>/services.json` records it.
public struct ServiceProcessRecord: Codable, Sendable, Equatable {
    public var name: String
    public var service: String
    public var identity: ProcessIdentity?
    public var port: Int
    public var executable: String
    public var arguments: [String]
    /// What the process was started with (endpoints and the JWT secret among them: the file is 0600).
    public var environment: [String: String]
    public var logPath: String
    /// SIGSTOPped by `prodready pause`.
    public var paused: Bool

    public init(name: String, service: String, identity: ProcessIdentity?, port: Int, executable: String, arguments: [String], environment: [String: String], logPath: String, paused: Bool) {
        self.name = name
        self.service = service
        self.identity = identity
        self.port = port
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.logPath = logPath
        self.paused = paused
    }

    public var url: String { "http://127.0.0.1:\(port)" }
    public var isRunning: Bool { identity?.isAlive ?? false }
}

/// The service processes of a `prodready up` stack: started next to the stack's components, stopped before them,
/// and acted on one at a time (stop, start, kill, pause, resume, restart) on the same port and data.
public actor StackServices {
    public let stackDirectory: String
    var path: String { stackDirectory + "/services.json" }

    public init(stackDirectory: String) {
        self.stackDirectory = stackDirectory
    }

    public func records() -> [ServiceProcessRecord] {
        guard let text = readTextFile(path), let records = try? JSONDecoder().decode([ServiceProcessRecord].self, from: Data(text.utf8)) else { return [] }
        return records.sorted { $0.name < $1.name }
    }

    public func record(_ name: String) -> ServiceProcessRecord? { records().first { $0.name == name } }

    private func save(_ records: [ServiceProcessRecord]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeTextFile(path, String(decoding: try encoder.encode(records), as: UTF8.self), mode: 0o600)
    }

    private func update(_ record: ServiceProcessRecord) throws {
        var all = records().filter { $0.name != record.name }
        all.append(record)
        try save(all)
    }

    /// Starts `record`'s process unless it runs already, and waits until its `/health/ready` answers 200.
    @discardableResult
    public func start(_ record: ServiceProcessRecord, timeout: Duration = .seconds(90)) async throws -> ServiceProcessRecord {
        if let existing = self.record(record.name), existing.isRunning { return existing }
        var record = record
        let child = try ChildProcess(executable: record.executable, arguments: record.arguments, environment: record.environment, logPath: record.logPath)
        record.identity = child.identity
        record.paused = false
        try update(record)
        try await waitUntilReady(record, timeout: timeout)
        return record
    }

    /// Starts a recorded process again on its port, with what it was started with before.
    public func start(_ name: String) async throws {
        let record = try existing(name)
        try await start(record)
    }

    /// Starts a recorded process again with `extraEnvironment` for this launch only (the record keeps what it
    /// was started with, so the next start is plain): a crash point armed once. With `awaitReady` false it
    /// returns once launched.
    public func start(_ name: String, extraEnvironment: [String: String], awaitReady: Bool, timeout: Duration = .seconds(90)) async throws {
        var record = try existing(name)
        if record.isRunning { return }
        let child = try ChildProcess(
            executable: record.executable, arguments: record.arguments, environment: record.environment.merging(extraEnvironment) { $1 }, logPath: record.logPath)
        record.identity = child.identity
        record.paused = false
        try update(record)
        if awaitReady { try await waitUntilReady(record, timeout: timeout) }
    }

    /// How `name`'s current launch ended, polled for up to `timeout`; nil while it runs. Known only to the process
    /// that started it (the parent reaps it).
    public func exit(of name: String, within timeout: Duration) async throws -> ChildExit? {
        guard let identity = try existing(name).identity else { return nil }
        return await ChildProcess.exit(of: identity, within: timeout)
    }

    public func stop(_ name: String, gracePeriod: Duration = .seconds(10)) async throws {
        var record = try existing(name)
        if let identity = record.identity { try await ChildProcess.terminate(identity, gracePeriod: gracePeriod) }
        record.identity = nil
        record.paused = false
        try update(record)
    }

    public func kill(_ name: String) async throws {
        var record = try existing(name)
        guard let identity = record.identity, identity.isAlive else { throw ProdReadyError(.notRunning, "\(name) is not running") }
        try await ChildProcess.kill(identity)
        record.identity = nil
        try update(record)
    }

    public func pause(_ name: String) throws { try signal(name, SIGSTOP, paused: true) }
    public func resume(_ name: String) throws { try signal(name, SIGCONT, paused: false) }

    public func restart(_ name: String) async throws {
        try await stop(name)
        try await start(name)
    }

    /// Stops every process (before the stack's components go).
    public func stopAll() async throws {
        for record in records() where record.isRunning { try await stop(record.name) }
    }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }

    private func signal(_ name: String, _ signal: Int32, paused: Bool) throws {
        var record = try existing(name)
        guard let identity = record.identity, identity.signalGroup(signal) else { throw ProdReadyError(.notRunning, "\(name) is not running") }
        record.paused = paused
        try update(record)
    }

    private func existing(_ name: String) throws -> ServiceProcessRecord {
        guard let record = record(name) else {
            throw ProdReadyError(.notFound, "no service process '\(name)' on this stack; start it with `prodready up --services …`")
        }
        return record
    }

    private func waitUntilReady(_ record: ServiceProcessRecord, timeout: Duration) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var last = "no answer yet"
        while clock.now < deadline {
            guard record.isRunning else {
                throw ProdReadyError(.processFailed, "\(record.name) exited before it was ready; last lines of \(record.logPath):\n\(tail(record.logPath))")
            }
            let answer = await HealthProbe.httpStatus(url: record.url + "/health/ready", timeout: .seconds(1))
            if answer.status == 200 { return }
            last = answer.detail
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ProdReadyError(.timeout, "\(record.name) was not ready within \(timeout) (\(last)); last lines of \(record.logPath):\n\(tail(record.logPath))")
    }

    func tail(_ path: String, lines: Int = 15) -> String {
        (readTextFile(path) ?? "(no log)").split(separator: "\n").suffix(lines).joined(separator: "\n")
    }
}
