public import PostgresNIO
public import ProdReadyPostgres
import ProdReadyReliability
import ProdReadyCore

/// Runs `body` with `pools` running connection pools and a fresh schema migrated to the latest reliability
/// schema (processed_events, aggregate_versions, outbox_events); the schema is dropped afterwards.
public func withReliabilitySchema<Result: Sendable>(
    _ url: String,
    pools: Int = 1,
    maximumConnections: Int = 4,
    _ body: (_ clients: [PostgresClient], _ schema: SQLIdentifier) async throws -> Result
) async throws -> Result {
    let schema = try SQLIdentifier(uniqueName("r").replacingAll("-", with: "_"))
    return try await withPostgresClients(url, count: pools, maximumConnections: maximumConnections) { clients in
        try await ReliabilitySchema.runner(schema: schema).run(on: clients[0])
        return try await runThenCleanUp({ try await body(clients, schema) }, cleanUp: {
            try await clients[0].query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(schema.quoted) CASCADE"), logger: testLogger)
        })
    }
}
