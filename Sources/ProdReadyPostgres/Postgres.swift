public import ProdReadyCore
public import PostgresNIO
public import Logging
import NIOPosix

/// Parses `postgresql://user:password@host:port/database`.
public struct PostgresURL: Sendable {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String

    public init(_ url: String) throws {
        let prefixes = ["postgresql://", "postgres://"]
        guard let prefix = prefixes.first(where: { url.hasPrefix($0) }) else {
            throw ProdReadyError(.invalidArgument, "PostgreSQL URL must start with postgresql://, got '\(redacted(url))'")
        }
        var rest = Substring(url.dropFirst(prefix.count))
        if let query = rest.firstIndex(of: "?") { rest = rest[..<query] }
        var user = "postgres"
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            if let colon = userInfo.firstIndex(of: ":") {
                user = percentDecoded(String(userInfo[..<colon]))
                password = percentDecoded(String(userInfo[userInfo.index(after: colon)...]))
            } else {
                user = percentDecoded(String(userInfo))
            }
            rest = rest[rest.index(after: at)...]
        }
        var database = user
        if let slash = rest.firstIndex(of: "/") {
            let name = rest[rest.index(after: slash)...]
            if !name.isEmpty { database = percentDecoded(String(name)) }
            rest = rest[..<slash]
        }
        var port = 5432
        if let colon = rest.lastIndex(of: ":") {
            guard let number = Int(rest[rest.index(after: colon)...]), (1...65535).contains(number) else {
                throw ProdReadyError(.invalidArgument, "PostgreSQL URL '\(redacted(url))' has an invalid port")
            }
            port = number
            rest = rest[..<colon]
        }
        guard !rest.isEmpty else { throw ProdReadyError(.invalidArgument, "PostgreSQL URL '\(redacted(url))' has no host") }
        self.host = String(rest)
        self.port = port
        self.user = user
        self.password = password
        self.database = database
    }

    /// One connection to this server (plain TCP: the embedded stack and the compose stack use no TLS).
    public var configuration: PostgresConnection.Configuration {
        PostgresConnection.Configuration(host: host, port: port, username: user, password: password, database: database, tls: .disable)
    }

    /// A connection pool to this server holding at most `maximumConnections`. With `searchPath`, every connection
    /// resolves unqualified names in that schema (a startup parameter, so it holds from the first statement).
    public func clientConfiguration(maximumConnections: Int = 8, searchPath: SQLIdentifier? = nil) -> PostgresClient.Configuration {
        var configuration = PostgresClient.Configuration(host: host, port: port, username: user, password: password, database: database, tls: .disable)
        configuration.options.maximumConnections = maximumConnections
        configuration.options.minimumConnections = 0
        if let searchPath {
            configuration.options.additionalStartupParameters = [("search_path", searchPath.quoted)]
        }
        return configuration
    }
}

func percentDecoded(_ text: String) -> String {
    var bytes: [UInt8] = []
    var iterator = Array(text.utf8).makeIterator()
    while let byte = iterator.next() {
        if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
           let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) {
            bytes.append(value)
        } else {
            bytes.append(byte)
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// The server's own message and SQLSTATE, or the connection-level error code; never the query text.
public func postgresErrorSummary(_ error: any Error) -> String {
    guard let error = error as? PSQLError else { return "\(error)" }
    if let message = error.serverInfo?[.message] {
        return "\(message) (SQLSTATE \(error.serverInfo?[.sqlState] ?? "?"))"
    }
    return "\(error.code)" + (error.underlying.map { " (\($0))" } ?? "")
}


extension ProdReadyError {
    /// Classifies a PostgresNIO error: connection-level failures and the SQLSTATE classes that a retry can
    /// clear (serialization failures, deadlocks, shutdown, too many connections) are retriable; the rest are
    /// the server refusing this request. `doing` says what was attempted; the query text is never included.
    public static func postgres(_ error: any Error, doing: String, file: String = #fileID, line: Int = #line) -> ProdReadyError {
        if let error = error as? ProdReadyError { return error }
        guard let psql = error as? PSQLError else {
            return ProdReadyError(.connectionFailed, "\(doing): \(error)", retriable: true, underlying: error, file: file, line: line)
        }
        guard let sqlState = psql.serverInfo?[.sqlState] else {
            return ProdReadyError(.connectionFailed, "\(doing): \(postgresErrorSummary(psql))", retriable: true, underlying: error, file: file, line: line)
        }
        let retriableStates: Set<String> = ["40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"]
        let retriable = retriableStates.contains(sqlState) || sqlState.hasPrefix("08")
        let code: ProdReadyError.Code
        switch sqlState {
        case _ where sqlState.hasPrefix("08"): code = .connectionFailed
        case _ where sqlState.hasPrefix("22") || sqlState.hasPrefix("23"): code = .invalidArgument
        case "42P01", "3F000", "42883": code = .notFound  // undefined table, schema or function: not migrated, or a wrong schema
        case "28P01", "28000", "42501": code = .accessDenied
        default: code = .serverError
        }
        // The server's message and SQLSTATE are the whole story; PSQLError's own description hides them.
        return ProdReadyError(code, "\(doing): \(postgresErrorSummary(psql))", retriable: retriable, underlying: nil, file: file, line: line)
    }
}

/// A Postgres identifier (schema or table name) that is safe to splice into SQL: lower-case letters, digits
/// and underscores, starting with a letter or underscore, at most 63 bytes. Rendered double-quoted.
public struct SQLIdentifier: Sendable, Hashable, CustomStringConvertible {
    public let name: String

    public init(_ name: String) throws {
        let bytes = Array(name.utf8)
        let valid = !bytes.isEmpty && bytes.count <= 63
            && bytes.allSatisfy { (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5f }
            && !(0x30...0x39).contains(bytes[0])
        guard valid else {
            throw ProdReadyError(.invalidArgument, "'\(name)' is not a valid identifier: use 1–63 lower-case letters, digits and underscores, not starting with a digit")
        }
        self.name = name
    }

    /// The identifier as SQL: `"name"`.
    public var quoted: String { "\"\(name)\"" }
    public var description: String { name }
}

/// Runs `body` in one transaction on a pooled connection. What `body` throws reaches the caller unchanged (the
/// transaction is rolled back); a failed BEGIN, COMMIT or connection lease becomes a classified `ProdReadyError`.
public func withPostgresTransaction<Result: Sendable>(
    _ client: PostgresClient,
    logger: Logger,
    doing: String,
    _ body: (PostgresConnection) async throws -> Result
) async throws -> Result {
    do {
        return try await client.withTransaction(logger: logger) { connection in try await body(connection) }
    } catch let error as PostgresTransactionError {
        if let bodyError = error.closureError { throw bodyError }
        throw ProdReadyError.postgres(error.commitError ?? error.beginError ?? error, doing: doing)
    } catch let error as PSQLError {
        throw ProdReadyError.postgres(error, doing: doing)
    }
}

/// Opens one connection to `url`; a refusal or timeout is a retriable `connection_failed` naming the server, and
/// an answer from the server (wrong password, "starting up") is classified by its SQLSTATE.
public func connectPostgres(
    _ url: String,
    logger: Logger = Logger(label: "prodready.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
) async throws -> PostgresConnection {
    let configuration = try PostgresURL(url).configuration
    do {
        return try await PostgresConnection.connect(on: MultiThreadedEventLoopGroup.singleton.any(), configuration: configuration, id: 1, logger: logger)
    } catch let error as PSQLError where error.serverInfo?[.sqlState] != nil {
        throw ProdReadyError.postgres(error, doing: "cannot connect to PostgreSQL at \(redacted(url))")
    } catch {
        throw ProdReadyError(.connectionFailed, "cannot connect to PostgreSQL at \(redacted(url)): \(postgresErrorSummary(error))", retriable: true)
    }
}

/// The rows of `query`, or a retriable `timeout` once `deadline` passes: PostgresNIO's pool keeps retrying an
/// unreachable server for as long as a query waits for a connection, so without a deadline a call made while
/// the server is down would wait until it is back. Errors are classified like `ProdReadyError.postgres`.
///
/// `executor` is where the query runs when a deadline applies (see `withDeadline`).
public func queryRows(
    _ client: PostgresClient,
    _ query: PostgresQuery,
    deadline: Duration?,
    executor: (any TaskExecutor)? = nil,
    doing: String,
    logger: Logger
) async throws -> [PostgresRow] {
    try await bounded(by: deadline, executor: executor, doing: doing) {
        try await client.query(query, logger: logger).collect()
    }
}

/// `queryRows` for a named prepared statement: parsed and planned once per connection, then only bound and run.
public func executeRows<Statement: PostgresPreparedStatement>(
    _ client: PostgresClient,
    _ statement: Statement,
    deadline: Duration?,
    executor: (any TaskExecutor)? = nil,
    doing: String,
    logger: Logger
) async throws -> [Statement.Row] where Statement.Row: Sendable {
    try await bounded(by: deadline, executor: executor, doing: doing) {
        var rows: [Statement.Row] = []
        for try await row in try await client.execute(statement, logger: logger) { rows.append(row) }
        return rows
    }
}

/// `body` under `deadline` (none: unbounded), its errors classified like `ProdReadyError.postgres`.
private func bounded<Value: Sendable>(
    by deadline: Duration?,
    executor: (any TaskExecutor)?,
    doing: String,
    _ body: @escaping @Sendable () async throws -> Value
) async throws -> Value {
    do {
        guard let deadline else { return try await body() }
        return try await withDeadline(deadline, executor: executor, timeoutError: {
            ProdReadyError(.timeout, "\(doing): PostgreSQL did not answer within \(deadline) (down, unreachable or overloaded)", retriable: true)
        }, body)
    } catch {
        throw ProdReadyError.postgres(error, doing: doing)
    }
}

/// Reads one integer (a count, say) with `query`.
public func queryInt(_ client: PostgresClient, _ query: PostgresQuery) async throws -> Int {
    let rows = try await client.query(query).collect()
    guard let row = rows.first else { throw ProdReadyError(.protocolError, "query returned no row") }
    return Int(try row.decode(Int64.self))
}

/// Runs `body` with connection pools to `url` — `count` independent pools of at most `maximumConnections`
/// each — running in the background, and shuts them down when `body` returns or throws.
public func withPostgresClients<Result: Sendable>(
    _ url: String,
    count: Int = 1,
    maximumConnections: Int = 4,
    logger: Logger = Logger(label: "prodready.postgres", factory: { _ in SwiftLogNoOpLogHandler() }),
    _ body: ([PostgresClient]) async throws -> Result
) async throws -> Result {
    let parsed = try PostgresURL(url)
    // A pool retries refused connections for as long as a request waits for one, so an unreachable server
    // would hang the first query; one direct connection first turns that into a prompt, clear error.
    try await connectPostgres(url, logger: logger).close()
    let configuration = parsed.clientConfiguration(maximumConnections: maximumConnections)
    let clients = (0..<max(1, count)).map { _ in PostgresClient(configuration: configuration, backgroundLogger: logger) }
    return try await whileRunning(clients.map { ($0, nil) }) { try await body(clients) }
}

/// Runs each pool (on its executor, if any) for the duration of `body`.
private func whileRunning<Result: Sendable>(
    _ pools: [(PostgresClient, (any TaskExecutor)?)],
    _ body: () async throws -> Result
) async throws -> Result {
    try await withThrowingTaskGroup(of: Void.self, returning: Result.self) { group in
        for (client, executor) in pools {
            group.addTask(executorPreference: executor) { await client.run() }
        }
        defer { group.cancelAll() }
        return try await body()
    }
}

/// A connection pool whose connections all live on one event loop, and an executor running tasks on that loop.
/// A worker that runs its loop with `withTaskExecutorPreference(executor)` (and passes `executor` to calls that
/// start tasks of their own) keeps each request and its answer on one thread.
public struct PinnedPostgresClient: Sendable {
    public let client: PostgresClient
    public let executor: EventLoopExecutor
    /// The schema every connection of `client` resolves unqualified names in (a startup parameter), if any:
    /// what lets callers use named prepared statements with static SQL for that schema.
    public let searchPath: SQLIdentifier?
}

/// `withPostgresClients` with each pool pinned to one event loop of the shared group (spread round-robin);
/// `count` may be 0 (no pools), for callers that choose the fast path per run.
public func withPinnedPostgresClients<Result: Sendable>(
    _ url: String,
    count: Int = 1,
    maximumConnections: Int = 4,
    searchPath: SQLIdentifier? = nil,
    logger: Logger = Logger(label: "prodready.postgres", factory: { _ in SwiftLogNoOpLogHandler() }),
    _ body: ([PinnedPostgresClient]) async throws -> Result
) async throws -> Result {
    let parsed = try PostgresURL(url)
    if count > 0 { try await connectPostgres(url, logger: logger).close() }
    var configuration = parsed.clientConfiguration(maximumConnections: maximumConnections, searchPath: searchPath)
    // The pool arms timers each time a connection goes back to it: an idle timeout for connections above the
    // minimum and a keep-alive ping. On a worker's hot loop that is two timers per call. Pinned pools keep all
    // their connections open and send no keep-alives: a connection the server closed is replaced when its close
    // is noticed, and a silently dead one fails the next call with the caller's operation timeout.
    configuration.options.minimumConnections = maximumConnections
    configuration.options.keepAliveBehavior = nil
    let group = MultiThreadedEventLoopGroup.singleton
    let pinned = (0..<max(0, count)).map { _ in
        let eventLoop = group.next()
        return PinnedPostgresClient(
            client: PostgresClient(configuration: configuration, eventLoopGroup: eventLoop, backgroundLogger: logger),
            executor: EventLoopExecutor(eventLoop),
            searchPath: searchPath
        )
    }
    // The pool's own work (leases, connection writes, timers) runs on the loop its connections live on.
    return try await whileRunning(pinned.map { ($0.client, $0.executor) }) { try await body(pinned) }
}

/// `withPostgresClients` with one pool.
public func withPostgresClient<Result: Sendable>(
    _ url: String,
    maximumConnections: Int = 4,
    _ body: (PostgresClient) async throws -> Result
) async throws -> Result {
    try await withPostgresClients(url, count: 1, maximumConnections: maximumConnections) { clients in try await body(clients[0]) }
}
