import Foundation
import ProdReadyCore
import AsyncHTTPClient
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Guarantees no orphans: a tiny shell process, in its own session, that waits for the owning process to
/// disappear (however it ends, SIGKILL included), then kills every process group listed in the stack's
/// `pgids` file, removes the sockets listed in its `outside` file (see `StackOutsideFiles`) and the stack directory. An
/// owner that tears down cleanly removes the directory first and the watchdog simply exits.
enum StackWatchdog {
    static let script = #"""
    owner="$1"; owner_start="$2"; dir="$3"
    started() { sed 's/.*) //' "/proc/$owner/stat" 2>/dev/null | cut -d' ' -f20; }
    while [ -d "$dir" ] && [ "$(started)" = "$owner_start" ]; do sleep 0.2; done
    [ -d "$dir" ] || exit 0
    if [ -f "$dir/pgids" ]; then
      while read -r group; do [ -n "$group" ] && kill -KILL -- "-$group" 2>/dev/null; done < "$dir/pgids"
    fi
    sleep 0.3
    if [ -f "$dir/outside" ]; then
      while read -r path; do [ -n "$path" ] && [ -S "$path" ] && rm -f "$path"; done < "$dir/outside"
    fi
    rm -rf "$dir"
    """#

    static func watch(stackDirectory: String, owner: ProcessIdentity, logPath: String) throws {
        guard let bash = findInPath("bash") else { throw ProdReadyError(.missingBinary, "bash not found") }
        guard let startTime = owner.startTime else {
            throw ProdReadyError(.configuration, "cannot read /proc/\(owner.pid)/stat; the watchdog needs /proc")
        }
        _ = try ChildProcess(
            executable: bash,
            arguments: ["-c", script, "prodready-watchdog", String(owner.pid), String(startTime), stackDirectory],
            logPath: logPath
        )
    }
}

/// Process-wide registry of the stacks this process owns, torn down synchronously at normal exit (the
/// watchdog covers abnormal exits).
final class OwnedStacks: @unchecked Sendable {
    // @unchecked Sendable: `directories` is guarded by `lock`.
    static let shared = OwnedStacks()
    private let lock = Mutex_()
    private var directories: Set<String> = []
    private var installed = false

    func register(_ directory: String) {
        lock.withLock {
            directories.insert(directory)
            if !installed {
                installed = true
                atexit { OwnedStacks.shared.killAllAtExit() }
            }
        }
    }

    func unregister(_ directory: String) {
        lock.withLock { _ = directories.remove(directory) }
    }

    /// Kills every owned stack's process groups and removes its directory; nothing async, for `atexit`.
    func killAllAtExit() {
        let all = lock.withLock { directories }
        for directory in all {
            for line in (readTextFile(directory + "/pgids") ?? "").split(separator: "\n") {
                if let group = Int32(line), group > 1 { Glibc.kill(-group, SIGKILL) }
            }
        }
        // Give the kernel a moment to release ports before the directory (and with it the watchdog's reason
        // to wait) disappears.
        usleep(100_000)
        for directory in all {
            StackOutsideFiles.removeAll(stackDirectory: directory)
            try? removeTree(directory)
        }
    }
}

/// Files a stack's servers create outside the stack directory, listed in `<stack>/outside` so that whoever
/// removes the stack (teardown, the watchdog, the exit handler) removes them too.
///
/// SeaweedFS binds its gRPC Unix sockets (and two more) at fixed paths in /tmp named by port, which no flag
/// moves; a SIGKILLed server leaves them behind (988 after a day of tests before they were cleaned up). Only
/// sockets are removed, so a listed path that became something else is left alone.
enum StackOutsideFiles {
    static func record(_ paths: [String], stackDirectory: String) throws {
        let listPath = stackDirectory + "/outside"
        let listed = (readTextFile(listPath) ?? "").split(separator: "\n").map(String.init)
        let added = paths.filter { !listed.contains($0) }
        guard !added.isEmpty else { return }
        try writeTextFile(listPath, (listed + added).joined(separator: "\n") + "\n")
    }

    static func removeAll(stackDirectory: String) {
        for path in (readTextFile(stackDirectory + "/outside") ?? "").split(separator: "\n") {
            var info = stat()
            if lstat(String(path), &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK { unlink(String(path)) }
        }
    }
}

/// Orphan protection for process groups that are not part of a stack (service processes a test starts): a
/// watchdog kills every group listed in `<directory>/pgids` and removes the directory once this process is gone,
/// SIGKILL included. A clean teardown removes the directory itself and the watchdog exits.
public enum OwnedProcessDirectory {
    public static func watch(_ directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try StackWatchdog.watch(stackDirectory: directory, owner: ProcessIdentity(pid: getpid()), logPath: directory + "/watchdog.log")
    }

    /// Lists a process group for the watchdog to kill.
    public static func adopt(processGroup: Int32, in directory: String) throws {
        let path = directory + "/pgids"
        let existing = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        try (existing + "\(processGroup)\n").write(toFile: path, atomically: true, encoding: .utf8)
    }
}
