public import PostgresNIO
import ProdReadyCore
public import ProdReadyPostgres
import Foundation
import Logging

/// A conditional reserve lost: the aggregate's last sequence was `actual`, not the `expected` the caller read.
public struct OptimisticConcurrencyConflict: Error, Sendable, Equatable, CustomStringConvertible {
    public let aggregateID: String
    public let expected: Int64
    public let actual: Int64

    public init(aggregateID: String, expected: Int64, actual: Int64) {
        self.aggregateID = aggregateID
        self.expected = expected
        self.actual = actual
    }

    public var description: String {
        "\(ProdReadyError.Code.optimisticConcurrencyConflict): aggregate '\(aggregateID)' is at sequence \(actual), the caller expected \(expected)"
    }

    /// The body of the HTTP 409 a service answers with (SPEC-reliability §2).
    public var httpBody: String {
        let object: [String: Any] = [
            "error": ProdReadyError.Code.optimisticConcurrencyConflict.rawValue,
            "aggregate_id": aggregateID, "expected_seq": expected, "actual_seq": actual,
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// Per-aggregate sequence numbers with optimistic concurrency (SPEC-reliability §2), kept in
/// `<schema>.aggregate_versions` under handler `write_side:<aggregate type>`. Each reserve is atomic, so any
/// number of allocators on any number of pools hand out every number once, without gaps.
public struct SequenceAllocator: Sendable {
    public let client: PostgresClient
    public let schema: SQLIdentifier
    public let aggregateType: String
    /// How long one reserve may wait for the database before it fails with a retriable `timeout` (nil: no
    /// limit), so a reserve made while the server is down fails instead of waiting for it to return.
    public let operationTimeout: Duration?
    let logger: Logger

    public init(
        client: PostgresClient,
        schema: SQLIdentifier,
        aggregateType: String,
        operationTimeout: Duration? = .seconds(30),
        logger: Logger = reliabilityLogger
    ) throws {
        try ProcessedEventRegistry.validateText(aggregateType, name: "aggregate type")
        if let operationTimeout, operationTimeout <= .zero {
            throw ProdReadyError(.invalidArgument, "operation timeout must be positive, got \(operationTimeout)")
        }
        self.client = client
        self.schema = schema
        self.aggregateType = aggregateType
        self.operationTimeout = operationTimeout
        self.logger = logger
    }

    /// The `handler` value of this allocator's rows.
    public var handler: String { "write_side:\(aggregateType)" }

    /// `last_sequence + 1`, atomically; nil when the aggregate has no row yet.
    public func tryReserveNext(_ aggregateID: String) async throws -> Int64? {
        try ProcessedEventRegistry.validateText(aggregateID, name: "aggregate id")
        let query: PostgresQuery = """
            UPDATE \(unescaped: schema.quoted).aggregate_versions SET last_sequence = last_sequence + 1, updated_at = now()
            WHERE handler = \(handler) AND aggregate_id = \(aggregateID) RETURNING last_sequence
            """
        return try await single(query, doing: "reserving the next sequence of \(aggregateID)")
    }

    /// `max(current, seed) + 1`, creating the row if needed. A negative seed is an error.
    public func reserveNext(_ aggregateID: String, seed: Int64) async throws -> Int64 {
        try ProcessedEventRegistry.validateText(aggregateID, name: "aggregate id")
        try Self.validate(seed: seed)
        let first = seed + 1
        let query: PostgresQuery = """
            INSERT INTO \(unescaped: schema.quoted).aggregate_versions AS av (handler, aggregate_id, last_sequence, updated_at)
            VALUES (\(handler), \(aggregateID), \(first), now())
            ON CONFLICT (handler, aggregate_id) DO UPDATE
            SET last_sequence = greatest(av.last_sequence, excluded.last_sequence - 1) + 1, updated_at = now()
            RETURNING last_sequence
            """
        guard let reserved = try await single(query, doing: "reserving the next sequence of \(aggregateID)") else {
            throw ProdReadyError(.protocolError, "reserve returned no row for \(aggregateID)")
        }
        return reserved
    }

    /// Increments only when `last_sequence == expected`. Nil when the aggregate has no row; a mismatch throws
    /// `OptimisticConcurrencyConflict` carrying expected and actual.
    public func tryReserveNext(_ aggregateID: String, ifExpected expected: Int64) async throws -> Int64? {
        try await reserveExpected(aggregateID, seed: nil, expected: expected)
    }

    /// In one transaction: raise the row to `max(current, seed)` (creating it), then increment only when it
    /// equals `expected`; a mismatch throws `OptimisticConcurrencyConflict`.
    public func reserveNext(_ aggregateID: String, seed: Int64, ifExpected expected: Int64) async throws -> Int64 {
        try Self.validate(seed: seed)
        guard let reserved = try await reserveExpected(aggregateID, seed: seed, expected: expected) else {
            throw ProdReadyError(.protocolError, "seeded reserve found no row for \(aggregateID)")
        }
        return reserved
    }

    private func reserveExpected(_ aggregateID: String, seed: Int64?, expected: Int64) async throws -> Int64? {
        try ProcessedEventRegistry.validateText(aggregateID, name: "aggregate id")
        guard expected >= 0 else { throw ProdReadyError(.invalidArgument, "expected sequence must be 0 or more, got \(expected)") }
        let query: PostgresQuery = """
            SELECT reserved, actual FROM \(unescaped: schema.quoted).prodready_reserve_expected(\(handler), \(aggregateID), \(seed), \(expected))
            """
        let rows = try await queryRows(client, query, deadline: operationTimeout, doing: "reserving sequence \(expected + 1) of \(aggregateID)", logger: logger)
        guard let row = rows.first else { throw ProdReadyError(.protocolError, "reserve_expected returned no row") }
        let (reserved, actual) = try row.decode((Int64?, Int64?).self)
        if let reserved { return reserved }
        guard let actual else { return nil }
        throw OptimisticConcurrencyConflict(aggregateID: aggregateID, expected: expected, actual: actual)
    }

    private func single(_ query: PostgresQuery, doing: String) async throws -> Int64? {
        let rows = try await queryRows(client, query, deadline: operationTimeout, doing: doing, logger: logger)
        do {
            return try rows.first?.decode(Int64.self)
        } catch {
            throw ProdReadyError.postgres(error, doing: doing)
        }
    }

    static func validate(seed: Int64) throws {
        guard seed >= 0 else { throw ProdReadyError(.invalidArgument, "seed must be 0 or more, got \(seed)") }
    }
}
