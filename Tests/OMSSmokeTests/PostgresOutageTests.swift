import Testing
import ProdReadyCore
import ProdReadyInfra
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
            }
        }
    }
}
