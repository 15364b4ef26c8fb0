import Testing
import PostgresNIO
import ProdReadyCore
import ProdReadyPostgres
import ProdReadyReliability
import TestSupport
import Logging

let testLogger = Logger(label: "prodready.oms-tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// The fast correctness layer's entry point: a fresh migrated schema on the suite's Postgres.
func withSchema<Result: Sendable>(
    pools: Int = 1,
    maximumConnections: Int = 4,
    _ body: (_ clients: [PostgresClient], _ schema: SQLIdentifier) async throws -> Result
) async throws -> Result {
    let url = try #require(try await TestInfrastructure.shared.endpoints(for: [.postgres]).postgresURL)
    return try await withReliabilitySchema(url, pools: pools, maximumConnections: maximumConnections, body)
}

func registry(_ client: PostgresClient, _ schema: SQLIdentifier, owner: String, lease: Duration = .seconds(900)) throws -> ProcessedEventRegistry {
    try ProcessedEventRegistry(client: client, schema: schema, options: .init(owner: owner, leaseTimeout: lease))
}

/// One processed_events row, as the tests inspect it.
struct ProcessedRow: Equatable {
    var status: String
    var owner: String
    var attemptCount: Int
    var lastError: String?
}

func processedRow(_ client: PostgresClient, _ schema: SQLIdentifier, handler: String, eventID: String) async throws -> ProcessedRow? {
    let query: PostgresQuery = """
        SELECT status, owner, attempt_count, last_error FROM \(unescaped: schema.quoted).processed_events
        WHERE handler = \(handler) AND event_id = \(eventID)
        """
    guard let row = try await client.query(query).collect().first else { return nil }
    let (status, owner, attempts, error) = try row.decode((String, String, Int, String?).self)
    return ProcessedRow(status: status, owner: owner, attemptCount: attempts, lastError: error)
}

func lastSequence(_ client: PostgresClient, _ schema: SQLIdentifier, handler: String, aggregateID: String) async throws -> Int64? {
    let query: PostgresQuery = """
        SELECT last_sequence FROM \(unescaped: schema.quoted).aggregate_versions WHERE handler = \(handler) AND aggregate_id = \(aggregateID)
        """
    return try await client.query(query).collect().first?.decode(Int64.self)
}

func count(_ client: PostgresClient, _ schema: SQLIdentifier, _ table: String, where condition: String = "true") async throws -> Int {
    try await queryInt(client, PostgresQuery(unsafeSQL: "SELECT count(*)::int8 FROM \(schema.quoted).\(table) WHERE \(condition)"))
}

/// The two ways to claim and finish events: one per call, or in batches (here batches of one). The seed tests
/// run against both, since the batch path must keep exactly the same transitions.
enum ClaimPath: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case single, batch

    var testDescription: String { rawValue }

    func claim(_ registry: ProcessedEventRegistry, handler: String, eventID: String, aggregateID: String? = nil, sequence: Int64? = nil) async throws -> ClaimOutcome {
        switch self {
        case .single:
            return try await registry.claim(handler: handler, eventID: eventID, aggregateID: aggregateID, sequence: sequence)
        case .batch:
            let outcomes = try await registry.claimBatch(handler: handler, [EventDelivery(eventID: eventID, aggregateID: aggregateID, sequence: sequence)])
            return try #require(outcomes.first)
        }
    }

    func markDone(_ registry: ProcessedEventRegistry, handler: String, eventID: String) async throws {
        switch self {
        case .single:
            try await registry.markDone(handler: handler, eventID: eventID)
        case .batch:
            if let error = try await registry.markDoneBatch(handler: handler, eventIDs: [eventID]).first?.error { throw error }
        }
    }
}
