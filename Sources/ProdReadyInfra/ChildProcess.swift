import ProdReadyCore
import CProdReadyShims
#if canImport(Glibc)
import Glibc
#endif

/// A process identity that survives pid reuse: the pid plus the kernel's start time for it.
public struct ProcessIdentity: Codable, Sendable, Equatable, CustomStringConvertible {
    public var pid: Int32
    /// Field 22 of /proc/PID/stat (clock ticks since boot); nil where /proc is unavailable.
    public var startTime: UInt64?

    public init(pid: Int32) {
        self.pid = pid
        self.startTime = Self.startTime(of: pid)
    }

    public var description: String { "pid \(pid)" }

    /// Whether this exact process still exists and has a thread that is not a zombie. (The leader thread of
    /// a multithreaded process reads as a zombie while its other threads are still exiting, holding its
    /// sockets.)
    public var isAlive: Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = Self.readStat(pid) else { return false }
        if let startTime, stat.startTime != startTime { return false }
        return Self.hasLiveThread(pid, leaderState: stat.state)
    }

    private static func hasLiveThread(_ pid: Int32, leaderState: Character) -> Bool {
        if leaderState != "Z" && leaderState != "X" { return true }
        guard let threads = try? listDirectory("/proc/\(pid)/task") else { return false }
        return threads.contains { thread in
            guard let text = readTextFile("/proc/\(pid)/task/\(thread)/stat"), let closing = text.lastIndex(of: ")") else { return false }
            let state = text[text.index(after: closing)...].split(separator: " ").first?.first
            return state != nil && state != "Z" && state != "X"
        }
    }

    /// Sends `signal` to the process group this process leads (every child spawned here leads its own).
    /// Does nothing if the process is gone, so a recycled pid is never signalled.
    @discardableResult
    public func signalGroup(_ signal: Int32) -> Bool {
        guard isAlive else { return false }
        return kill(-pid, signal) == 0 || kill(pid, signal) == 0
    }

    /// Whether any live process (not a zombie) is still in the process group this process led: forked
    /// children (Redis' AOF child, Postgres backends) can outlive the leader by a moment, holding its sockets.
    public var groupHasLiveMembers: Bool {
        guard let entries = try? listDirectory("/proc") else { return false }
        for entry in entries {
            guard let member = Int32(entry), let stat = Self.readStat(member) else { continue }
            if stat.processGroup == pid, Self.hasLiveThread(member, leaderState: stat.state) { return true }
        }
        return false
    }

    static func startTime(of pid: Int32) -> UInt64? { readStat(pid)?.startTime }

    private static func readStat(_ pid: Int32) -> (state: Character, processGroup: Int32, startTime: UInt64)? {
        guard let text = readTextFile("/proc/\(pid)/stat"),
              let closing = text.lastIndex(of: ")") else { return nil }
        // Fields after the command name (which may contain spaces) start at field 3 (state); field 5 is the
        // process group and field 22 the start time.
        let fields = text[text.index(after: closing)...].split(separator: " ")
        guard fields.count > 19, let state = fields[0].first, let group = Int32(fields[2]), let start = UInt64(fields[19]) else { return nil }
        return (state, group, start)
    }
}

/// A child process in its own session (so signals reach its whole process group and a terminal's Ctrl-C
/// does not), with stdout and stderr appended to a log file.
public final class ChildProcess: Sendable {
    public let identity: ProcessIdentity
    public let executable: String
    public let logPath: String

    public var pid: Int32 { identity.pid }

    /// Spawns `executable` with `arguments`. `environment` replaces the inherited one when given.
    /// - Parameters:
    ///   - standardInput: a file to read standard input from (default `/dev/null`).
    ///   - reapAutomatically: false when the caller itself waits for the exit status.
    public init(
        executable: String,
        arguments: [String],
        environment: [String: String]? = nil,
        standardInput: String = "/dev/null",
        logPath: String,
        reapAutomatically: Bool = true
    ) throws {
        guard access(executable, X_OK) == 0 else {
            throw ProdReadyError(.missingBinary, "cannot execute '\(executable)'")
        }
        var fileActions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        posix_spawn_file_actions_addopen(&fileActions, 0, standardInput, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fileActions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&fileActions, 1, 2)
        // Servers live long: they must not keep the caller's other descriptors open (a pipe someone reads to
        // EOF, a listening socket, a lock file). Closed in the child at spawn time, so a descriptor another
        // thread opens a moment before cannot slip through.
        let closeStatus = prodready_spawn_addclosefrom(&fileActions, 3)
        guard closeStatus == 0 else {
            throw ProdReadyError(.processFailed, "cannot prepare to spawn '\(executable)': \(String(cString: strerror(closeStatus)))")
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A new session: the child leads its own process group, so stop/kill/pause reach its children too.
        let flags = Int16(posixSpawnSetSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        posix_spawnattr_setflags(&attributes, flags)
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaultSignals = sigset_t()
        sigemptyset(&defaultSignals)
        for signal in [SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD] { sigaddset(&defaultSignals, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaultSignals)

        let argv = [executable] + arguments
        let environmentEntries = (environment ?? currentEnvironment()).map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        let status = withCStringArray(argv) { argvPointer in
            withCStringArray(environmentEntries) { environmentPointer in
                posix_spawn(&pid, executable, &fileActions, &attributes, argvPointer, environmentPointer)
            }
        }
        guard status == 0 else {
            throw ProdReadyError(.processFailed, "cannot start '\(executable)': \(String(cString: strerror(status)))")
        }
        self.identity = ProcessIdentity(pid: pid)
        self.executable = executable
        self.logPath = logPath
        if reapAutomatically { ChildReaper.shared.adopt(pid) }
    }

    /// Waits for a process and every member of its process group to be gone, polling; true if they went
    /// away within `timeout`.
    public static func waitForExit(_ identity: ProcessIdentity, timeout: Duration) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        func gone() -> Bool {
            ChildReaper.shared.reap()
            return !identity.isAlive && !identity.groupHasLiveMembers
        }
        while clock.now < deadline {
            if gone() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return gone()
    }

    /// SIGTERM-like `signal` to the group, then SIGKILL after `gracePeriod`. Returns once the process is gone.
    public static func terminate(_ identity: ProcessIdentity, signal requestedSignal: Int32? = nil, gracePeriod: Duration = .seconds(10)) async throws {
        let signal = requestedSignal ?? SIGTERM
        guard identity.isAlive else { return }
        // A paused process cannot handle SIGTERM: let it run so it can shut down cleanly.
        identity.signalGroup(SIGCONT)
        identity.signalGroup(signal)
        if await waitForExit(identity, timeout: gracePeriod) { return }
        identity.signalGroup(SIGKILL)
        guard await waitForExit(identity, timeout: .seconds(5)) else {
            throw ProdReadyError(.processFailed, "\(identity) survived SIGKILL for 5 s")
        }
    }

    /// SIGKILL to the whole group, then wait until it is gone.
    public static func kill(_ identity: ProcessIdentity) async throws {
        identity.signalGroup(SIGKILL)
        guard await waitForExit(identity, timeout: .seconds(5)) else {
            throw ProdReadyError(.processFailed, "\(identity) survived SIGKILL for 5 s")
        }
    }
}

/// How a child process ended.
public enum ChildExit: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)
    public var description: String {
        switch self {
        case .exited(let code): "exit status \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }

    /// The status a shell reports: the exit status, or 128 + the signal.
    public var shellStatus: Int32 {
        switch self {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        }
    }
}

extension ChildProcess {
    /// How an automatically reaped child ended, once it has (nil while it runs or if it was not ours).
    public static func exit(of identity: ProcessIdentity) -> ChildExit? { ChildReaper.shared.ending(of: identity.pid) }

    /// How the child ended, polled for up to `timeout`; nil if it still runs then (or was not ours).
    public static func exit(of identity: ProcessIdentity, within timeout: Duration) async -> ChildExit? {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            if let ending = exit(of: identity) { return ending }
            if clock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// Reaps children this process spawned so they do not linger as zombies after exiting.
final class ChildReaper: @unchecked Sendable {
    // @unchecked Sendable: `children` is guarded by `lock`.
    static let shared = ChildReaper()
    private let lock = Mutex_()
    private var children: Set<pid_t> = []
    /// How reaped children ended, kept for callers that ask (a test checking a graceful exit's status).
    private var endings: [pid_t: ChildExit] = [:]

    func adopt(_ pid: pid_t) {
        lock.withLock {
            _ = children.insert(pid)
            endings[pid] = nil
        }
    }

    func reap() {
        lock.withLock {
            for pid in children {
                var status: Int32 = 0
                let result = waitpid(pid, &status, WNOHANG)
                if result == pid {
                    // WIFEXITED / WEXITSTATUS / WTERMSIG, which the Glibc overlay does not import.
                    let signal = status & 0x7f
                    endings[pid] = signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
                }
                if result == pid || (result == -1 && errno == ECHILD) { children.remove(pid) }
            }
        }
    }

    func ending(of pid: pid_t) -> ChildExit? {
        reap()
        return lock.withLock { endings[pid] }
    }
}

/// A pthread mutex; `Synchronization.Mutex` is not usable in a stored property of a non-final-class context
/// on every toolchain we build with.
final class Mutex_: @unchecked Sendable {
    // @unchecked Sendable: a pthread mutex is safe to share between threads by construction.
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}

/// glibc's POSIX_SPAWN_SETSID (a GNU extension the Swift overlay does not import).
private let posixSpawnSetSID: Int32 = 0x80

public func currentEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
        let text = String(cString: entry)
        if let equals = text.firstIndex(of: "=") {
            result[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        pointer += 1
    }
    return result
}

func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers = strings.map { strdup($0) } + [nil]
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

func readTextFile(_ path: String) -> String? {
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(descriptor, &buffer, buffer.count)
        if count <= 0 { break }
        bytes.append(contentsOf: buffer[0..<count])
    }
    return String(decoding: bytes, as: UTF8.self)
}
