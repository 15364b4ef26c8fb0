import Testing
import ProdReadyCore
import ProdReadyInfra
import TestSupport

/// Durability starts from the storage layer: committed rows must survive a SIGKILL of the server that holds
/// them. This private-stack test is the first of the suite's crash checks.
@Suite("Durability: crash recovery", .requiresEmbedded(.postgres))
struct CrashRecoveryTests {
    @Test("every committed row survives SIGKILL of PostgreSQL; nothing half-written appears")
    func committedRowsSurviveSigkill() async throws {
        try await withPrivateStack([.postgres], label: "durability") { stack in
            let url = try #require(await stack.endpoints.postgresURL)
            try await withPostgresConnection(url) { connection in
                try await connection.query("CREATE TABLE ledger (id bigint PRIMARY KEY, amount bigint NOT NULL)", logger: .init(label: "t"))
                for id in 1...200 {
                    try await connection.query("INSERT INTO ledger VALUES (\(id), \(id * 10))", logger: .init(label: "t"))
                }
            }
            try await stack.kill(.postgres)
            try await stack.start(.postgres)
            let (count, sum) = try await withPostgresConnection(url) { connection in
                let rows = try await connection.query("SELECT count(*), sum(amount)::bigint FROM ledger", logger: .init(label: "t"))
                var result = (0, 0)
                for try await (count, sum) in rows.decode((Int, Int).self) { result = (count, sum) }
                return result
            }
            #expect(count == 200)
            #expect(sum == (1...200).reduce(0) { $0 + $1 * 10 })
        }
    }
}
