public import ProdReadyCore

/// A small pool of `RedisConnection`s for concurrent callers. Connections are opened on demand up to
/// `maximumConnections` and reused; each reconnects by itself after an I/O error, so the pool never needs
/// rebuilding after a server restart. It has no background work, so it is not a `Service`.
public final class RedisClient: RedisCommandRunner {
    public let endpoint: RedisEndpoint
    private let pool: Pool

    public init(url: String, maximumConnections: Int = 4, timeout: Duration = .seconds(2)) throws {
        endpoint = try RedisEndpoint(url: url)
        guard (1...256).contains(maximumConnections) else {
            throw ProdReadyError(.invalidArgument, "a Redis pool needs 1 to 256 connections, got \(maximumConnections)")
        }
        guard timeout > .zero else { throw ProdReadyError(.invalidArgument, "Redis timeout must be positive, got \(timeout)") }
        pool = Pool(url: url, maximum: maximumConnections, timeout: timeout)
    }

    /// Runs `body` with a connection of its own (for several commands in a row, or a long blocking read).
    public func withConnection<Result: Sendable>(_ body: (RedisConnection) async throws -> Result) async throws -> Result {
        let connection = try await pool.acquire()
        do {
            let result = try await body(connection)
            await pool.release(connection)
            return result
        } catch {
            await pool.release(connection)
            throw error
        }
    }

    public func command(bytes arguments: [[UInt8]], blockingFor: Duration?) async throws -> RedisValue {
        try await withConnection { try await $0.command(bytes: arguments, blockingFor: blockingFor) }
    }

    /// See `RedisConnection.pipeline`: one round trip on one connection.
    public func pipeline(_ commands: [[[UInt8]]]) async throws -> [Result<RedisValue, ProdReadyError>] {
        try await withConnection { try await $0.pipeline(commands) }
    }

    public func pipeline(_ commands: [[String]]) async throws -> [Result<RedisValue, ProdReadyError>] {
        try await withConnection { try await $0.pipeline(commands) }
    }

    /// Connections opened so far (for tests and diagnostics).
    public var openConnections: Int {
        get async { await pool.open }
    }

    private actor Pool {
        let url: String
        let maximum: Int
        let timeout: Duration
        private var idle: [RedisConnection] = []
        private(set) var open = 0
        /// Callers waiting for a connection; resumed with one, or with nil to try opening one themselves.
        private var waiters: [CheckedContinuation<RedisConnection?, Never>] = []

        init(url: String, maximum: Int, timeout: Duration) {
            self.url = url
            self.maximum = maximum
            self.timeout = timeout
        }

        func acquire() async throws -> RedisConnection {
            while true {
                try Task.checkCancellation()
                if let connection = idle.popLast() { return connection }
                if open < maximum {
                    open += 1
                    do {
                        return try await RedisConnection(url: url, timeout: timeout)
                    } catch {
                        open -= 1
                        // A slot is free again: let a waiter try its own luck instead of waiting forever.
                        if !waiters.isEmpty { waiters.removeFirst().resume(returning: nil) }
                        throw error
                    }
                }
                if let connection = await withCheckedContinuation({ waiters.append($0) }) { return connection }
            }
        }

        func release(_ connection: RedisConnection) {
            if waiters.isEmpty {
                idle.append(connection)
            } else {
                waiters.removeFirst().resume(returning: connection)
            }
        }
    }
}
