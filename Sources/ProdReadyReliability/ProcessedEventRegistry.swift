public import PostgresNIO
public import ProdReadyCore
public import ProdReadyPostgres
import Foundation
import Logging

/// What `claim` decided about one delivery of an event.
public enum ClaimOutcome: Sendable, Equatable, CustomStringConvertible {
    /// This worker owns the event now and must process it, then `markDone` or `markFailed`.
    case claimed(attempt: Int)
    /// Already processed (or skipped as stale): acknowledge the delivery and do nothing.
    case duplicateDone
    /// Another worker holds a live lease on it: do not process; the broker may redeliver later.
    case inProgress
    /// An event of the same aggregate with this or a later sequence is already done: recorded as
    /// `skipped_stale`, not processed.
    case stale

    public var description: String {
        switch self {
        case .claimed(let attempt): "claimed (attempt \(attempt))"
        case .duplicateDone: "duplicateDone"
        case .inProgress: "inProgress"
        case .stale: "stale"
        }
    }

    public var isClaimed: Bool { if case .claimed = self { true } else { false } }
}

/// One delivery to claim: the event and, for the ordering guard, its aggregate and sequence.
public struct EventDelivery: Sendable, Hashable {
    public var eventID: String
    public var aggregateID: String?
    public var sequence: Int64?

    public init(eventID: String, aggregateID: String? = nil, sequence: Int64? = nil) {
        self.eventID = eventID
        self.aggregateID = aggregateID
        self.sequence = sequence
    }
}

/// The processed-event registry of SPEC-reliability §1: idempotent handling with leases and an ordering guard,
/// on `<schema>.processed_events` and `<schema>.aggregate_versions`.
///
/// Every operation is one round trip and one transaction (server-side functions installed by
/// `ReliabilitySchema`). `claimBatch`/`markDoneBatch` are the same transitions for many events at once, for
/// consumers that read batches from a broker.
public struct ProcessedEventRegistry: Sendable {
    public struct Options: Sendable {
        /// Who this worker is, recorded as `owner`; only the owner may finish what it claimed.
        public var owner: String
        /// How long a claim stays exclusive without a heartbeat.
        public var leaseTimeout: Duration
        /// How long one operation may wait for the database before it fails with a retriable `timeout` (nil:
        /// no limit). While the server is down, calls fail after this instead of waiting for it to return.
        public var operationTimeout: Duration?
        /// Where each call's database work runs: a `PinnedPostgresClient`'s executor keeps a worker that runs on
        /// it on its connection's thread (nil: the global pool).
        public var executor: (any TaskExecutor)?
        /// Whether a claim's commit waits for its WAL flush (see `ClaimCommit`). Finishes always do.
        public var claimCommit: ClaimCommit

        public init(
            owner: String = defaultOwner(service: "prodready"), leaseTimeout: Duration = .seconds(900), operationTimeout: Duration? = .seconds(30),
            executor: (any TaskExecutor)? = nil, claimCommit: ClaimCommit = .synchronous
        ) {
            self.owner = owner
            self.leaseTimeout = leaseTimeout
            self.operationTimeout = operationTimeout
            self.executor = executor
            self.claimCommit = claimCommit
        }
    }

    /// How `claim` and `claimBatch` commit. `markDone`, `markFailed`, `heartbeat` and `markDone(…, thenClaim:)`
    /// always commit synchronously: a finished event is never forgotten.
    public enum ClaimCommit: Sendable, Equatable {
        /// The claim returns once its commit is flushed to disk, like every other call.
        case synchronous
        /// The claim's transaction commits with `synchronous_commit = off`: it returns before its WAL record is
        /// flushed, which PostgreSQL does within three `wal_writer_delay`s (600 ms by default) or with the next
        /// synchronous commit of any session (this worker's `markDone`). A claim is a lease, so the cost of
        /// losing one is bounded: if PostgreSQL crashes inside that window the claim is forgotten and a
        /// redelivery is claimed afresh (attempt 1) at once — even while the first worker, if it survived,
        /// still runs its handler, which a synchronous claim would have kept exclusive until its lease ran out.
        /// Half the flushes per event: for handlers that tolerate that rare double run.
        case asynchronous
    }

    public let client: PostgresClient
    public let schema: SQLIdentifier
    public let options: Options
    let logger: Logger
    /// Whether the per-event calls use named prepared statements (the pool's connections resolve names in `schema`).
    let usesPreparedStatements: Bool

    /// A registry on a pool pinned to one event loop (see `withPinnedPostgresClients`): calls run on its executor
    /// (unless `options` names another), and when the pool's search path is `schema`, claim and markDone are
    /// named prepared statements. One worker loop per registry, run on `pool.executor`, is the fast path.
    public init(pool: PinnedPostgresClient, schema: SQLIdentifier, options: Options = Options(), logger: Logger = reliabilityLogger) throws {
        var options = options
        if options.executor == nil { options.executor = pool.executor }
        try self.init(client: pool.client, schema: schema, options: options, logger: logger, preparedStatements: pool.searchPath == schema)
    }

    public init(client: PostgresClient, schema: SQLIdentifier, options: Options = Options(), logger: Logger = reliabilityLogger) throws {
        try self.init(client: client, schema: schema, options: options, logger: logger, preparedStatements: false)
    }

    private init(client: PostgresClient, schema: SQLIdentifier, options: Options, logger: Logger, preparedStatements: Bool) throws {
        guard !options.owner.isEmpty else { throw ProdReadyError(.invalidArgument, "registry owner must not be empty") }
        guard options.leaseTimeout > .zero else { throw ProdReadyError(.invalidArgument, "lease timeout must be positive, got \(options.leaseTimeout)") }
        if let timeout = options.operationTimeout, timeout <= .zero {
            throw ProdReadyError(.invalidArgument, "operation timeout must be positive, got \(timeout)")
        }
        self.client = client
        self.schema = schema
        self.options = options
        self.logger = logger
        self.usesPreparedStatements = preparedStatements
    }

    public var owner: String { options.owner }

    /// `"<service>:<pid>:<8 random hex>"`: unique per process start, readable in `processed_events.owner`.
    public static func defaultOwner(service: String) -> String {
        let random = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        return "\(service):\(ProcessInfo.processInfo.processIdentifier):\(String(repeating: "0", count: 8 - random.count) + random)"
    }

    // MARK: - Single events

    public func claim(handler: String, eventID: String, aggregateID: String? = nil, sequence: Int64? = nil) async throws -> ClaimOutcome {
        try Self.validate(handler: handler, eventID: eventID)
        try Self.validate(aggregateID: aggregateID, sequence: sequence)
        let s = schema.quoted
        let leaseMilliseconds = options.leaseTimeout.wholeMilliseconds
        let doing = "claiming \(handler)/\(eventID)"
        let answer: (String, Int?)?
        if usesPreparedStatements {
            let statement = ClaimStatement(handler: handler, eventID: eventID, aggregateID: aggregateID, sequence: sequence, owner: owner, leaseMilliseconds: leaseMilliseconds)
            switch options.claimCommit {
            case .synchronous: answer = try await execute(statement, doing: doing).first
            case .asynchronous: answer = try await execute(AsynchronousClaimStatement(claim: statement), doing: doing).first
            }
        } else {
            let query: PostgresQuery = """
                SELECT claim_outcome, claim_attempts
                FROM \(unescaped: s).prodready_claim(\(handler), \(eventID), \(aggregateID), \(sequence), \(owner), \(leaseMilliseconds))\(unescaped: claimCommitClause)
                """
            answer = try await fetch(query, doing: doing).first?.decode((String, Int?).self)
        }
        guard let (outcome, attempts) = answer else { throw ProdReadyError(.protocolError, "claim returned no row") }
        return try Self.outcome(outcome, attempts: attempts)
    }

    /// Finishes a claimed event and advances the aggregate's `last_sequence` (never backwards). Finishing an
    /// event that is already done or stale is a no-op; one owned by someone else, or never claimed, is an error.
    public func markDone(handler: String, eventID: String) async throws {
        try Self.validate(handler: handler, eventID: eventID)
        let doing = "mark done \(handler)/\(eventID)"
        let answer: (String, String?, String?)?
        if usesPreparedStatements {
            answer = try await execute(MarkDoneStatement(handler: handler, eventID: eventID, owner: owner), doing: doing).first
        } else {
            let query: PostgresQuery = """
                SELECT done_result, current_status, current_owner
                FROM \(unescaped: schema.quoted).prodready_mark_done(\(handler), \(eventID), \(owner))
                """
            answer = try await fetch(query, doing: doing).first?.decode((String, String?, String?).self)
        }
        try requireFinished(answer, handler: handler, eventID: eventID, doing: "mark done", succeeded: ["done", "already_done"])
    }

    /// `markDone(handler:eventID:)` for the event just handled and `claim` of the next delivery, in one round
    /// trip and one transaction: a consumer's loop at one commit per event instead of two. When the finish is
    /// refused (someone else owns `eventID`, or it was never claimed) nothing is claimed and the refusal is
    /// thrown, as `markDone` would; otherwise the next delivery's claim outcome is returned.
    public func markDone(handler: String, eventID: String, thenClaim next: EventDelivery) async throws -> ClaimOutcome {
        try Self.validate(handler: handler, eventID: eventID)
        try Self.validate(handler: handler, eventID: next.eventID)
        try Self.validate(aggregateID: next.aggregateID, sequence: next.sequence)
        let doing = "mark done \(handler)/\(eventID) then claim \(next.eventID)"
        let answer: (String, String?, String?, String?, Int?)?
        if usesPreparedStatements {
            let statement = MarkDoneThenClaimStatement(handler: handler, eventID: eventID, owner: owner, next: next, leaseMilliseconds: options.leaseTimeout.wholeMilliseconds)
            answer = try await execute(statement, doing: doing).first
        } else {
            let query: PostgresQuery = """
                SELECT done_result, current_status, current_owner, claim_outcome, claim_attempts
                FROM \(unescaped: schema.quoted).prodready_mark_done_then_claim(
                    \(handler), \(eventID), \(owner), \(next.eventID), \(next.aggregateID), \(next.sequence), \(options.leaseTimeout.wholeMilliseconds))
                """
            answer = try await fetch(query, doing: doing).first?.decode((String, String?, String?, String?, Int?).self)
        }
        guard let (result, status, currentOwner, outcome, attempts) = answer else {
            throw ProdReadyError(.protocolError, "mark done then claim returned no row")
        }
        try requireFinished((result, status, currentOwner), handler: handler, eventID: eventID, doing: "mark done", succeeded: ["done", "already_done"])
        guard let outcome else { throw ProdReadyError(.protocolError, "mark done then claim finished \(eventID) but returned no claim outcome") }
        return try Self.outcome(outcome, attempts: attempts)
    }

    /// Records a failure of a claimed event (error text truncated to 4,000 characters). The next claim
    /// re-claims it with `attempt_count + 1`. Never overwrites `done`/`skipped_stale`; a non-owner gets an error.
    public func markFailed(handler: String, eventID: String, error text: String) async throws {
        try Self.validate(handler: handler, eventID: eventID)
        let s = schema.quoted
        // Postgres text cannot hold NUL; the rest is kept and cut to the column's 4,000 characters server-side.
        let storable = text.replacingAll("\u{0}", with: "\u{FFFD}")
        let query: PostgresQuery = """
            SELECT failed_result, current_status, current_owner
            FROM \(unescaped: s).prodready_mark_failed(\(handler), \(eventID), \(owner), \(storable))
            """
        let answer = try await fetch(query, doing: "mark failed \(handler)/\(eventID)").first?.decode((String, String?, String?).self)
        try requireFinished(answer, handler: handler, eventID: eventID, doing: "mark failed", succeeded: ["failed", "already_done"])
    }

    /// A mark function's answer (result, current status, current owner): a refusal becomes an error.
    private func requireFinished(_ answer: (String, String?, String?)?, handler: String, eventID: String, doing: String, succeeded: Set<String>) throws {
        guard let (result, status, currentOwner) = answer else { throw ProdReadyError(.protocolError, "\(doing) returned no row") }
        guard succeeded.contains(result) else {
            throw ownershipError(result, handler: handler, eventID: eventID, status: status, currentOwner: currentOwner, doing: doing)
        }
    }

    /// Refreshes the lease of an event this worker holds. Returns false when it no longer holds it.
    @discardableResult
    public func heartbeat(handler: String, eventID: String) async throws -> Bool {
        try Self.validate(handler: handler, eventID: eventID)
        let s = schema.quoted
        let query: PostgresQuery = "SELECT \(unescaped: s).prodready_heartbeat(\(handler), \(eventID), \(owner))"
        let rows = try await fetch(query, doing: "heartbeat for \(handler)/\(eventID)")
        return try rows.first?.decode(Bool.self) ?? false
    }

    /// Runs a long `body` while refreshing the event's lease every `interval`. If a heartbeat finds the lease
    /// gone (another worker took the event over), `body` is cancelled and `lease_lost` is thrown.
    public func withHeartbeat<Result: Sendable>(
        handler: String,
        eventID: String,
        every interval: Duration,
        _ body: @escaping @Sendable () async throws -> Result
    ) async throws -> Result {
        try await withThrowingTaskGroup(of: Result?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                while true {
                    try await Task.sleep(for: interval)
                    guard try await heartbeat(handler: handler, eventID: eventID) else {
                        throw ProdReadyError(.leaseLost, "lease on \(handler)/\(eventID) lost: another worker owns it now; the result of this attempt must be discarded")
                    }
                }
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let result = next { return result }
            }
            throw CancellationError()
        }
    }

    // MARK: - Batches

    /// Claims many events in one round trip and one transaction, with exactly the transitions of `claim`.
    /// Outcomes are in the order of `deliveries`; a repeat of an event inside the batch is `inProgress`.
    public func claimBatch(handler: String, _ deliveries: [EventDelivery]) async throws -> [ClaimOutcome] {
        guard !deliveries.isEmpty else { return [] }
        for delivery in deliveries {
            try Self.validate(handler: handler, eventID: delivery.eventID)
            try Self.validate(aggregateID: delivery.aggregateID, sequence: delivery.sequence)
        }
        let s = schema.quoted
        let eventIDs = deliveries.map(\.eventID)
        let aggregateIDs = deliveries.map { $0.aggregateID ?? "" }
        let sequences = deliveries.map { $0.sequence ?? -1 }
        let leaseMilliseconds = options.leaseTimeout.wholeMilliseconds
        let query: PostgresQuery = """
            SELECT claim_ordinal, claim_outcome, claim_attempts
            FROM \(unescaped: s).prodready_claim_batch(\(handler), \(eventIDs), \(aggregateIDs), \(sequences), \(owner), \(leaseMilliseconds))\(unescaped: claimCommitClause)
            """
        let rows = try await fetch(query, doing: "claiming \(deliveries.count) events for \(handler)")
        var outcomes = [ClaimOutcome?](repeating: nil, count: deliveries.count)
        for row in rows {
            let (ordinal, outcome, attempts) = try row.decode((Int64, String, Int?).self)
            guard (1...Int64(deliveries.count)).contains(ordinal) else { throw ProdReadyError(.protocolError, "claim_batch returned ordinal \(ordinal)") }
            outcomes[Int(ordinal) - 1] = try Self.outcome(outcome, attempts: attempts)
        }
        guard outcomes.allSatisfy({ $0 != nil }) else { throw ProdReadyError(.protocolError, "claim_batch answered \(rows.count) of \(deliveries.count) events") }
        return outcomes.map { $0! }
    }

    /// The result of finishing one event of a batch: nil error when done (or already done).
    public struct MarkResult: Sendable {
        public var eventID: String
        public var error: ProdReadyError?
    }

    /// Finishes many claimed events in one round trip; aggregates advance to the highest sequence finished.
    public func markDoneBatch(handler: String, eventIDs: [String]) async throws -> [MarkResult] {
        guard !eventIDs.isEmpty else { return [] }
        for eventID in eventIDs { try Self.validate(handler: handler, eventID: eventID) }
        let s = schema.quoted
        let query: PostgresQuery = """
            SELECT done_ordinal, done_result, current_status, current_owner
            FROM \(unescaped: s).prodready_mark_done_batch(\(handler), \(eventIDs), \(owner))
            """
        let rows = try await fetch(query, doing: "marking \(eventIDs.count) events of \(handler) done")
        var results = [MarkResult?](repeating: nil, count: eventIDs.count)
        for row in rows {
            let (ordinal, result, status, currentOwner) = try row.decode((Int64, String, String?, String?).self)
            guard (1...Int64(eventIDs.count)).contains(ordinal) else { throw ProdReadyError(.protocolError, "mark_done_batch returned ordinal \(ordinal)") }
            let eventID = eventIDs[Int(ordinal) - 1]
            switch result {
            case "done", "already_done": results[Int(ordinal) - 1] = MarkResult(eventID: eventID, error: nil)
            default:
                results[Int(ordinal) - 1] = MarkResult(eventID: eventID, error: ownershipError(result, handler: handler, eventID: eventID, status: status, currentOwner: currentOwner, doing: "mark done"))
            }
        }
        guard results.allSatisfy({ $0 != nil }) else { throw ProdReadyError(.protocolError, "mark_done_batch answered \(rows.count) of \(eventIDs.count) events") }
        return results.map { $0! }
    }

    // MARK: - Helpers

    /// Appended to a claim's FROM list: a one-row function call that sets the transaction's commit mode (the
    /// statement is its own transaction, so the setting holds exactly until its commit).
    private var claimCommitClause: String {
        switch options.claimCommit {
        case .synchronous: ""
        case .asynchronous: AsynchronousClaimStatement.commitClause
        }
    }

    private func ownershipError(_ result: String, handler: String, eventID: String, status: String?, currentOwner: String?, doing: String) -> ProdReadyError {
        if result == "missing" {
            return ProdReadyError(.notFound, "cannot \(doing) \(handler)/\(eventID): it was never claimed")
        }
        return ProdReadyError(
            .notOwner,
            "cannot \(doing) \(handler)/\(eventID): it is '\(status ?? "?")' and owned by '\(currentOwner ?? "?")', not by '\(owner)'"
        )
    }

    private func fetch(_ query: PostgresQuery, doing: String) async throws -> [PostgresRow] {
        try await queryRows(client, query, deadline: options.operationTimeout, executor: options.executor, doing: doing, logger: logger)
    }

    private func execute<Statement: PostgresPreparedStatement>(_ statement: Statement, doing: String) async throws -> [Statement.Row] where Statement.Row: Sendable {
        try await executeRows(client, statement, deadline: options.operationTimeout, executor: options.executor, doing: doing, logger: logger)
    }

    static func outcome(_ text: String, attempts: Int?) throws -> ClaimOutcome {
        switch text {
        case "claimed": return .claimed(attempt: attempts ?? 1)
        case "duplicate_done": return .duplicateDone
        case "in_progress": return .inProgress
        case "stale": return .stale
        default: throw ProdReadyError(.protocolError, "unknown claim outcome '\(text)'")
        }
    }

    static let maximumIdentifierLength = 512

    static func validate(handler: String, eventID: String) throws {
        try validateText(handler, name: "handler")
        try validateText(eventID, name: "event id")
    }

    static func validate(aggregateID: String?, sequence: Int64?) throws {
        if let aggregateID { try validateText(aggregateID, name: "aggregate id") }
        if let sequence, sequence < 0 {
            throw ProdReadyError(.invalidArgument, "sequence must be 0 or more, got \(sequence)")
        }
    }

    static func validateText(_ value: String, name: String) throws {
        guard !value.isEmpty else { throw ProdReadyError(.invalidArgument, "\(name) must not be empty") }
        guard value.utf8.count <= maximumIdentifierLength else {
            throw ProdReadyError(.invalidArgument, "\(name) is \(value.utf8.count) bytes; at most \(maximumIdentifierLength) are allowed")
        }
        guard !value.utf8.contains(0) else { throw ProdReadyError(.invalidArgument, "\(name) must not contain NUL characters") }
    }
}
