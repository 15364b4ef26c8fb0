import ProdReadyCore
#if canImport(Glibc)
import Glibc
#endif

/// A cluster made once by `initdb` and copied for every stack: copying takes a fraction of a second where
/// `initdb` takes seconds, which is what makes a private Postgres per test affordable.
struct PostgresTemplate {
    let toolchain: Toolchain

    /// Versioned: a template made by an older ProdReady with other settings is never reused.
    var directory: String { toolchain.home + "/templates/postgres-v4" }
    /// Copies of the template made ahead of time; a new stack takes one with a single `rename`.
    var sparesDirectory: String { directory + "-spares" }
    /// How many spare copies to keep ready.
    static let spareCount = 2

    /// PostgreSQL refuses to run as root; as root, servers run as this user (created by Debian's package).
    static let serviceUserName = "postgres"

    /// Puts a fresh cluster at `destination`: a spare copy if one is ready, else a copy made now. Either
    /// way, spares are topped up in the background for the next stack.
    func copy(into destination: String) async throws {
        try await ensureExists()
        defer { refillSpares() }
        if claimSpare(into: destination) { return }
        try await runToCompletion("/bin/cp", ["-a", directory, destination], logPath: toolchain.home + "/templates/copy.log")
    }

    func prepare() async throws {
        try await ensureExists()
        refillSpares()
    }

    private func claimSpare(into destination: String) -> Bool {
        guard let names = try? listDirectory(sparesDirectory) else { return false }
        for name in names.sorted() where name.hasPrefix("ready-") {
            // rename is atomic: of two processes claiming the same spare, exactly one succeeds.
            if rename(sparesDirectory + "/" + name, destination) == 0 { return true }
        }
        return false
    }

    /// Starts background copies until `spareCount` spares are ready or being made. A copy is made under a
    /// `copying-` name and renamed to `ready-` only once complete, so a half-made copy is never claimed.
    private func refillSpares() {
        guard (try? makeDirectories(sparesDirectory)) != nil, let names = try? listDirectory(sparesDirectory) else { return }
        let present = names.filter { $0.hasPrefix("ready-") || $0.hasPrefix("copying-") }.count
        guard present < Self.spareCount, let shell = findInPath("sh") else { return }
        for _ in present..<Self.spareCount {
            let id = String(UInt64.random(in: 0...UInt64.max), radix: 16)
            let copying = "\(sparesDirectory)/copying-\(id)"
            let ready = "\(sparesDirectory)/ready-\(id)"
            _ = try? ChildProcess(
                executable: shell,
                arguments: ["-c", #"cp -a "$1" "$2" && mv "$2" "$3" || rm -rf "$2""#, "prodready-spare", directory, copying, ready],
                logPath: toolchain.home + "/templates/copy.log"
            )
        }
    }

    private func ensureExists() async throws {
        if fileExists(directory + "/PG_VERSION") { return }
        try makeDirectories(toolchain.home + "/templates")
        let lock = try FileLock(path: toolchain.home + "/templates/postgres.lock")
        try await lock.acquire(timeout: .seconds(120))
        defer { lock.release() }
        if fileExists(directory + "/PG_VERSION") { return }

        let building = directory + ".building.\(getpid())"
        try? removeTree(building)
        try makeDirectories(building, mode: 0o700)
        let passwordFile = toolchain.home + "/templates/pwfile.\(getpid())"
        try writeTextFile(passwordFile, NativeStack.postgresPassword + "\n")
        let sqlFile = toolchain.home + "/templates/create.\(getpid()).sql"
        // MD5 rather than SCRAM for the embedded loopback stack: SCRAM's 4,096 PBKDF2 rounds take about a
        // second per connection in a debug build of the client, which every test connection would pay.
        try writeTextFile(sqlFile, """
            CREATE DATABASE \(NativeStack.postgresDatabase);
            DROP DATABASE postgres;
            SET password_encryption = 'md5';
            ALTER ROLE \(NativeStack.postgresUser) PASSWORD '\(NativeStack.postgresPassword)';

            """)
        defer {
            unlink(passwordFile)
            unlink(sqlFile)
        }
        if let user = Self.serviceUser() {
            for path in [building, passwordFile, sqlFile] { chown(path, user.uid, user.gid) }
        }
        let log = toolchain.home + "/templates/initdb.log"
        let initdb = try Self.asServiceUser(executable: try toolchain.postgresBinary("initdb"), arguments: [
            "-D", building, "-U", NativeStack.postgresUser, "--pwfile=\(passwordFile)",
            "--auth-host=md5", "--auth-local=trust", "-E", "UTF8", "--no-locale", "--no-sync",
            // 1 MB WAL segments instead of 16 MB: every stack copies the template, and the copy is what a
            // private Postgres costs.
            "--wal-segsize=1",
        ])
        try await runToCompletion(initdb.executable, initdb.arguments, logPath: log)
        // Connected to template1 so the unused `postgres` database can be dropped: a quarter fewer files to
        // copy per stack.
        let single = try Self.asServiceUser(executable: try toolchain.postgresBinary("postgres"), arguments: [
            "--single", "-D", building, "-F", "-c", "unix_socket_directories=", "template1",
        ])
        try await runToCompletion(single.executable, single.arguments, standardInput: sqlFile, logPath: log)
        guard rename(building, directory) == 0 else {
            throw ProdReadyError(.configuration, "cannot move the Postgres template into place: \(String(cString: strerror(errno)))")
        }
    }

    static func serviceUser() -> (uid: uid_t, gid: gid_t)? {
        guard geteuid() == 0 else { return nil }
        guard let entry = getpwnam(serviceUserName) else { return nil }
        return (entry.pointee.pw_uid, entry.pointee.pw_gid)
    }

    /// Wraps a command so it runs as the service user when we are root (through `setpriv`, which execs in
    /// place so the pid we track is the server's own).
    static func asServiceUser(executable: String, arguments: [String]) throws -> NativeStack.Launch {
        guard geteuid() == 0 else { return NativeStack.Launch(executable: executable, arguments: arguments, environment: nil) }
        guard getpwnam(serviceUserName) != nil else {
            throw ProdReadyError(.configuration, "running as root, PostgreSQL needs the '\(serviceUserName)' user (created by the Debian postgresql package); run scripts/bootstrap")
        }
        guard let setpriv = findInPath("setpriv") else {
            throw ProdReadyError(.missingBinary, "setpriv not found (Debian package util-linux)")
        }
        return NativeStack.Launch(
            executable: setpriv,
            arguments: ["--reuid=\(serviceUserName)", "--regid=\(serviceUserName)", "--clear-groups", "--", executable] + arguments,
            environment: nil
        )
    }
}

/// An advisory lock on a file (flock), shared by every process on the machine.
final class FileLock: Sendable {
    private let descriptor: Int32
    let path: String

    init(path: String) throws {
        self.path = path
        descriptor = open(path, O_RDWR | O_CREAT, 0o644)
        guard descriptor >= 0 else {
            throw ProdReadyError(.configuration, "cannot open lock file \(path): \(String(cString: strerror(errno)))")
        }
    }

    func acquire(timeout: Duration) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            guard clock.now < deadline else {
                throw ProdReadyError(.timeout, "another process holds \(path) for more than \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    func release() {
        flock(descriptor, LOCK_UN)
    }

    deinit { close(descriptor) }
}
