import Testing
import ProdReadyCore
import ProdReadyInfra
import ProdReadyPostgres
import ProdReadyReliability
import TestSupport

/// Calls made while the database is down: PostgresNIO's pool would wait for the server to come back; the
/// registry and the allocator fail within their operation timeout instead, and carry on once it is back.
@Suite("OMS fast layer: registry and allocator while Postgres is down", .requiresEmbedded(.postgres))
struct PostgresOutageTests {
    @Test("with Postgres stopped, claim, markDone and reserve fail with a retriable timeout within the operation timeout; after a restart the same objects work")
    func callsDuringAnOutage() async throws {
        try await withPrivateStack([.postgres], label: "registry-outage") { stack in
            let url = try #require(await stack.endpoints.postgresURL)
            try await withReliabilitySchema(url) { clients, schema in
                try await withPinnedPostgresClients(url, count: 1, maximumConnections: 1, searchPath: schema) { pools in
                    // The fast path (event-loop executor, its timer, prepared statements) must bound its calls the same way.
                    let pinned = try ProcessedEventRegistry(pool: pools[0], schema: schema, options: .init(owner: "outage-pinned", operationTimeout: .seconds(2)))
                    #expect(try await pinned.claim(handler: "p", eventID: "before") == .claimed(attempt: 1))
                    let registry = try ProcessedEventRegistry(client: clients[0], schema: schema, options: .init(owner: "outage-test", operationTimeout: .seconds(2)))
                    let allocator = try SequenceAllocator(client: clients[0], schema: schema, aggregateType: "order", operationTimeout: .seconds(2))
                    #expect(try await registry.claim(handler: "h", eventID: "before") == .claimed(attempt: 1))
                    #expect(try await allocator.reserveNext("order-1", seed: 0) == 1)

                    try await stack.stop(.postgres)
                    let clock = ContinuousClock()
                    let calls: [(String, @Sendable () async throws -> Void)] = [
                        ("claim", { _ = try await registry.claim(handler: "h", eventID: "during") }),
                        ("markDone", { try await registry.markDone(handler: "h", eventID: "before") }),
                        ("reserveNext", { _ = try await allocator.reserveNext("order-1", seed: 0) }),
                        ("pinned claim", { _ = try await pinned.claim(handler: "p", eventID: "during") }),
                        ("pinned markDone then claim", { _ = try await pinned.markDone(handler: "p", eventID: "before", thenClaim: EventDelivery(eventID: "next")) }),
                    ]
                    for (name, call) in calls {
                        let started = clock.now
                        let error = await #expect(throws: ProdReadyError.self, "\(name) with Postgres stopped") { try await call() }
                        let elapsed = clock.now - started
                        #expect(error?.isRetriable == true, "\(name): \(String(describing: error))")
                        #expect(error?.code == .timeout || error?.code == .connectionFailed, "\(name): \(String(describing: error))")
                        #expect(elapsed < .seconds(4), "\(name) failed after \(elapsed); the operation timeout is 2 s")
                    }

                    try await stack.start(.postgres)
                    try await eventually("the same registry to reach the restarted server", timeout: .seconds(30), interval: .milliseconds(200)) { () -> PollOutcome<Void> in
                        do {
                            try await registry.markDone(handler: "h", eventID: "before")
                            return .done(())
                        } catch let error as ProdReadyError where error.isRetriable {
                            return .pending("\(error)")
                        }
                    }
                    #expect(try await registry.claim(handler: "h", eventID: "before") == .duplicateDone)
                    #expect(try await allocator.reserveNext("order-1", seed: 0) == 2, "the reserve that timed out during the outage never reached the server")
                    let next = try await eventually("the pinned registry to reach the restarted server", timeout: .seconds(30), interval: .milliseconds(200)) { () -> PollOutcome<ClaimOutcome> in
                        do {
                            return .done(try await pinned.markDone(handler: "p", eventID: "before", thenClaim: EventDelivery(eventID: "next")))
                        } catch let error as ProdReadyError where error.isRetriable {
                            return .pending("\(error)")
                        }
                    }
                    #expect(next == .claimed(attempt: 1))
                    try await pinned.markDone(handler: "p", eventID: "next")
                    #expect(try await pinned.claim(handler: "p", eventID: "before") == .duplicateDone)
                }
            }
        }
    }
}
