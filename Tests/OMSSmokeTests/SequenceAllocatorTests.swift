import Testing
import Foundation
import PostgresNIO
import ProdReadyCore
import ProdReadyPostgres
import ProdReadyReliability
import TestSupport

/// SPEC-reliability §2 against a real Postgres.
@Suite("OMS fast layer: sequence allocator and migrations", .requires(.postgres))
struct SequenceAllocatorTests {
    @Test("two allocators on separate pools fire 50 concurrent reserves on one aggregate → exactly 1…50")
    func concurrentReserves() async throws {
        try await withSchema(pools: 2) { clients, schema in
            let allocators = try clients.map { try SequenceAllocator(client: $0, schema: schema, aggregateType: "order") }
            let numbers = try await withThrowingTaskGroup(of: Int64.self) { group in
                for index in 0..<50 {
                    let allocator = allocators[index % 2]
                    group.addTask { try await allocator.reserveNext("order-1", seed: 0) }
                }
                return try await group.reduce(into: [Int64]()) { $0.append($1) }
            }
            #expect(numbers.sorted() == Array(1...50))
        }
    }

    @Test("seed 10 → 11 then 12; catch-up: 1, 2, then seed 20 → 21, then 22")
    func seeds() async throws {
        try await withSchema { clients, schema in
            let allocator = try SequenceAllocator(client: clients[0], schema: schema, aggregateType: "order")
            #expect(try await allocator.reserveNext("seeded", seed: 10) == 11)
            #expect(try await allocator.reserveNext("seeded", seed: 10) == 12)
            #expect(try await allocator.reserveNext("catch-up", seed: 0) == 1)
            #expect(try await allocator.reserveNext("catch-up", seed: 0) == 2)
            #expect(try await allocator.reserveNext("catch-up", seed: 20) == 21)
            #expect(try await allocator.reserveNext("catch-up", seed: 0) == 22)
            #expect(try await allocator.tryReserveNext("catch-up") == 23)
            #expect(try await allocator.tryReserveNext("no-row") == nil)
            #expect(try await lastSequence(clients[0], schema, handler: "write_side:order", aggregateID: "catch-up") == 23)
            // Another aggregate type is another sequence.
            let invoices = try SequenceAllocator(client: clients[0], schema: schema, aggregateType: "invoice")
            #expect(try await invoices.reserveNext("catch-up", seed: 0) == 1)
        }
    }

    @Test("optimistic concurrency: no row + expected 0 → nil; seed 0 expected 0 → 1; expected 1 → 2; expected 1 again → conflict (1, 2)")
    func optimisticConcurrency() async throws {
        try await withSchema { clients, schema in
            let allocator = try SequenceAllocator(client: clients[0], schema: schema, aggregateType: "order")
            #expect(try await allocator.tryReserveNext("order-9", ifExpected: 0) == nil)
            #expect(try await allocator.reserveNext("order-9", seed: 0, ifExpected: 0) == 1)
            #expect(try await allocator.tryReserveNext("order-9", ifExpected: 1) == 2)
            let conflict = await #expect(throws: OptimisticConcurrencyConflict.self) {
                try await allocator.tryReserveNext("order-9", ifExpected: 1)
            }
            #expect(conflict == OptimisticConcurrencyConflict(aggregateID: "order-9", expected: 1, actual: 2))
            let body = try #require(conflict?.httpBody)
            let decoded = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
            #expect(decoded["error"] as? String == "optimistic_concurrency_conflict")
            #expect(decoded["aggregate_id"] as? String == "order-9")
            #expect((decoded["expected_seq"] as? NSNumber)?.intValue == 1)
            #expect((decoded["actual_seq"] as? NSNumber)?.intValue == 2)
            let seeded = await #expect(throws: OptimisticConcurrencyConflict.self) {
                try await allocator.reserveNext("order-9", seed: 5, ifExpected: 2)
            }
            #expect(seeded?.actual == 5, "the seed raised the row to 5 before the conditional increment")
            #expect(try await lastSequence(clients[0], schema, handler: "write_side:order", aggregateID: "order-9") == 5)
        }
    }

    @Test("4 allocators × 500 concurrent reserves over 10 aggregates: each aggregate gets exactly 1…n")
    func allocatorStress() async throws {
        var random = SeededRandom.fromEnvironment(label: "allocator-stress")
        let plan = (0..<2_000).map { _ in "agg-\(Int.random(in: 0..<10, using: &random))" }
        try await withSchema(pools: 4, maximumConnections: 2) { clients, schema in
            let allocators = try clients.map { try SequenceAllocator(client: $0, schema: schema, aggregateType: "order") }
            let reserved = try await withThrowingTaskGroup(of: [(String, Int64)].self) { group in
                for (index, allocator) in allocators.enumerated() {
                    let mine = stride(from: index, to: plan.count, by: allocators.count).map { plan[$0] }
                    group.addTask {
                        // 500 reserves per allocator, 4 at a time on its own pool.
                        try await withThrowingTaskGroup(of: (String, Int64).self) { inner in
                            var results: [(String, Int64)] = []
                            var pending = mine[...]
                            for _ in 0..<4 {
                                guard let aggregate = pending.popFirst() else { break }
                                inner.addTask { (aggregate, try await allocator.reserveNext(aggregate, seed: 0)) }
                            }
                            while let result = try await inner.next() {
                                results.append(result)
                                if let aggregate = pending.popFirst() {
                                    inner.addTask { (aggregate, try await allocator.reserveNext(aggregate, seed: 0)) }
                                }
                            }
                            return results
                        }
                    }
                }
                return try await group.reduce(into: [(String, Int64)]()) { $0 += $1 }
            }
            #expect(reserved.count == 2_000)
            let byAggregate = Dictionary(grouping: reserved, by: \.0).mapValues { $0.map(\.1).sorted() }
            for (aggregate, numbers) in byAggregate {
                #expect(numbers == Array(1...Int64(numbers.count)), "\(aggregate): gap or repeat in \(numbers.count) numbers")
                #expect(try await lastSequence(clients[0], schema, handler: "write_side:order", aggregateID: aggregate) == Int64(numbers.count))
            }
        }
    }

    @Test("bad input: negative seed or expected, empty aggregate id or type → invalid_argument, nothing written")
    func badInput() async throws {
        try await withSchema { clients, schema in
            let allocator = try SequenceAllocator(client: clients[0], schema: schema, aggregateType: "order")
            let cases: [(String, @Sendable () async throws -> Void)] = [
                ("negative seed", { _ = try await allocator.reserveNext("a", seed: -1) }),
                ("negative seed with expected", { _ = try await allocator.reserveNext("a", seed: -5, ifExpected: 0) }),
                ("negative expected", { _ = try await allocator.tryReserveNext("a", ifExpected: -1) }),
                ("empty aggregate", { _ = try await allocator.reserveNext("", seed: 0) }),
                ("empty aggregate, try", { _ = try await allocator.tryReserveNext("") }),
            ]
            for (name, call) in cases {
                let error = await #expect(throws: ProdReadyError.self, "\(name)") { try await call() }
                #expect(error?.code == .invalidArgument, "\(name): \(String(describing: error))")
            }
            #expect(throws: ProdReadyError.self) { try SequenceAllocator(client: clients[0], schema: schema, aggregateType: "") }
            #expect(try await count(clients[0], schema, "aggregate_versions") == 0)
        }
    }

    @Test("migrations are idempotent, safe to run concurrently, and refuse a schema newer than the code")
    func migrations() async throws {
        try await withSchema(pools: 3, maximumConnections: 1) { clients, schema in
            let runner = try ReliabilitySchema.runner(schema: schema)
            let again = try await runner.run(on: clients[0])
            #expect(again == MigrationReport(applied: [], currentVersion: runner.latestVersion))
            // A fresh schema migrated by three services starting at once: each version applied exactly once.
            let fresh = try SQLIdentifier(schema.name + "_b")
            let freshRunner = try ReliabilitySchema.runner(schema: fresh)
            let reports = try await withThrowingTaskGroup(of: MigrationReport.self) { group in
                for client in clients { group.addTask { try await freshRunner.run(on: client) } }
                return try await group.reduce(into: [MigrationReport]()) { $0.append($1) }
            }
            #expect(reports.flatMap(\.applied).sorted() == Array(1...runner.latestVersion))
            #expect(reports.allSatisfy { $0.currentVersion == runner.latestVersion })
            #expect(try await count(clients[0], fresh, "prodready_schema_migrations") == runner.latestVersion)
            try await clients[0].query(PostgresQuery(unsafeSQL: "INSERT INTO \(fresh.quoted).prodready_schema_migrations (version, name) VALUES (\(runner.latestVersion + 1), 'from the future')"))
            let refused = await #expect(throws: ProdReadyError.self) { try await freshRunner.run(on: clients[0]) }
            #expect(refused?.code == .incompatibleSchema)
            #expect(refused?.message.contains("version \(runner.latestVersion + 1)") == true, "\(String(describing: refused))")
            try await clients[0].query(PostgresQuery(unsafeSQL: "DROP SCHEMA \(fresh.quoted) CASCADE"))
        }
    }
}
