import ProdReadyCore
#if canImport(Glibc)
import Glibc
#endif

/// A cluster made once by `initdb` and copied for every stack: copying takes a fraction of a second where
/// `initdb` takes seconds, which is what makes a private Postgres per test affordable.
struct PostgresTemplate {
    let toolchain: Toolchain

    var directory: String { toolchain.home + "/templates/postgres" }

    /// PostgreSQL refuses to run as root; as root, servers run as this user (created by Debian's package).
    static let serviceUserName = "postgres"

    func copy(into destination: String) async throws {
        try await ensureExists()
        try await runToCompletion("/bin/cp", ["-a", directory, destination], logPath: toolchain.home + "/templates/copy.log")
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
        try writeTextFile(sqlFile, "CREATE DATABASE \(NativeStack.postgresDatabase);\n")
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
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-locale", "--no-sync",
        ])
        try await runToCompletion(initdb.executable, initdb.arguments, logPath: log)
        let single = try Self.asServiceUser(executable: try toolchain.postgresBinary("postgres"), arguments: [
            "--single", "-D", building, "-F", "-c", "unix_socket_directories=", "postgres",
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
