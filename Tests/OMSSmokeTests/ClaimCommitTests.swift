import Testing
import PostgresNIO
import ProdReadyCore
import ProdReadyPostgres
import ProdReadyReliability
import TestSupport

/// `ClaimCommit.asynchronous` must really skip the claim's WAL flush, and `.synchronous` must not: on a private
/// Postgres nobody else writes to, the gap between what is written to the WAL and what is flushed right after
/// a claim returns tells the two apart.
@Suite("OMS fast layer: claim commit modes", .requiresEmbedded(.postgres))
struct ClaimCommitTests {
    /// Bytes of WAL inserted but not yet flushed.
    static func unflushedBytes(_ client: PostgresClient) async throws -> Int64 {
        let rows = try await client.query("SELECT (pg_current_wal_insert_lsn() - pg_current_wal_flush_lsn())::int8").collect()
        return try #require(rows.first).decode(Int64.self)
    }

    @Test("right after a synchronous claim its WAL is flushed; right after an asynchronous one it is not yet, and markDone flushes it")
    func flushDependsOnTheMode() async throws {
        try await withPrivateStack([.postgres], label: "claim-commit") { stack in
            let url = try #require(await stack.endpoints.postgresURL)
            try await withReliabilitySchema(url, pools: 2, maximumConnections: 1) { clients, schema in
                let synchronous = try ProcessedEventRegistry(client: clients[0], schema: schema, options: .init(owner: "sync"))
                let asynchronous = try ProcessedEventRegistry(client: clients[0], schema: schema, options: .init(owner: "async", claimCommit: .asynchronous))
                let observer = clients[1]
                // The WAL writer flushes asynchronous commits every 200 ms, which a loaded machine can let pass
                // between a claim and the look at the WAL: on this private server it waits 10 s instead (every
                // server process rereads its settings on the reload signal). The server also writes a record of
                // its own now and then; five rounds and a majority keep that from deciding the test.
                try await observer.query("ALTER SYSTEM SET wal_writer_delay = '10s'")
                try await observer.query("SELECT pg_reload_conf()")
                try await eventually("the server to take wal_writer_delay = 10 s") {
                    let rows = try await observer.query("SELECT setting FROM pg_settings WHERE name = 'wal_writer_delay'").collect()
                    return try rows.first?.decode(String.self) == "10000"
                }
                var synchronousGaps: [Int64] = []
                var asynchronousGaps: [Int64] = []
                var afterMarkDone: [Int64] = []
                for round in 0..<5 {
                    #expect(try await synchronous.claim(handler: "h", eventID: "s\(round)") == .claimed(attempt: 1))
                    synchronousGaps.append(try await Self.unflushedBytes(observer))
                    #expect(try await asynchronous.claim(handler: "h", eventID: "a\(round)") == .claimed(attempt: 1))
                    asynchronousGaps.append(try await Self.unflushedBytes(observer))
                    try await asynchronous.markDone(handler: "h", eventID: "a\(round)")
                    afterMarkDone.append(try await Self.unflushedBytes(observer))
                    try await synchronous.markDone(handler: "h", eventID: "s\(round)")
                }
                let summary = "unflushed bytes after synchronous claims \(synchronousGaps), asynchronous claims \(asynchronousGaps), their markDone \(afterMarkDone)"
                #expect(synchronousGaps.filter { $0 == 0 }.count >= 3, "\(summary)")
                #expect(asynchronousGaps.filter { $0 > 0 }.count >= 3, "\(summary)")
                #expect(afterMarkDone.filter { $0 == 0 }.count >= 3, "\(summary)")
                // Nothing else differs: both claims ended done.
                for round in 0..<5 {
                    #expect(try await processedRow(clients[0], schema, handler: "h", eventID: "a\(round)")?.status == "done")
                }
            }
        }
    }
}
