import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import ProdReadyCore
import ProdReadyInfra
import ProdReadyPostgres
import ProdReadyReliability
import ServiceLifecycle
import Synchronization

struct OutboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outbox",
        abstract: "Run an outbox relay, and inspect or requeue a transactional outbox (SPEC-reliability §3).",
        discussion: """
        Every subcommand works on <schema>.outbox_events in the database given by --database-url (default: \
        the POSTGRES_URL variable that `eval "$(prodready up)"` exports).
        """,
        subcommands: [Relay.self, Status.self, Requeue.self]
    )

    struct DatabaseOptions: ParsableArguments {
        @Option(name: .long, help: "PostgreSQL URL (default: $POSTGRES_URL).")
        var databaseURL: String?

        @Option(name: .long, help: "Schema holding outbox_events.")
        var schema: String

        func resolvedURL() throws -> String {
            if let databaseURL { return databaseURL }
            if let url = ProcessInfo.processInfo.environment[EnvironmentVariable.postgresURL], !url.isEmpty { return url }
            throw ProdReadyError(.configuration, "no database: pass --database-url or set \(EnvironmentVariable.postgresURL) (eval \"$(prodready up)\" sets it)")
        }

        func resolvedSchema() throws -> SQLIdentifier { try SQLIdentifier(schema) }
    }

    struct Relay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish committed outbox rows to a sink until stopped (SIGTERM/SIGINT finish the current batch).",
            discussion: """
            Several relays may run against one outbox: batches are claimed with FOR UPDATE SKIP LOCKED. Rows a \
            killed relay had claimed are picked up by any relay once --claim-timeout-ms has passed.

            The sink here is a table (--sink-table): one row per delivery in <schema>.<table>, created if \
            missing. Prints "relay <id> ready" when it starts and a progress line per second on stderr.
            """
        )

        @OptionGroup var database: DatabaseOptions
        @Option(name: .long, help: "Table in the same schema that receives every published event.")
        var sinkTable: String
        @Option(name: .long, help: "This relay's name in outbox_events.claimed_by (default: outbox-relay:<pid>:<random>).")
        var relayID: String?
        @Option(name: .long, help: "Rows per claim (1–10000).")
        var batchSize: Int = 500
        @Option(name: .long, help: "How long a claim is exclusive, in milliseconds.")
        var claimTimeoutMs: Int = 30_000
        @Option(name: .long, help: "Base of the exponential retry backoff, in milliseconds (full jitter, capped at 300 s).")
        var retryBaseMs: Int = 1_000
        @Flag(name: .long, help: "Exit once no row is pending, retryable or abandoned, instead of polling.")
        var untilEmpty = false
        @Option(name: .long, help: "Fault injection: after claiming a batch, wait this many milliseconds before publishing it.")
        var stallAfterClaimMs: Int = 0

        func validate() throws {
            guard (1...10_000).contains(batchSize) else { throw ValidationError("--batch-size must be between 1 and 10000") }
            guard claimTimeoutMs >= 10 else { throw ValidationError("--claim-timeout-ms must be at least 10") }
            guard retryBaseMs >= 0 else { throw ValidationError("--retry-base-ms must not be negative") }
            guard stallAfterClaimMs >= 0 else { throw ValidationError("--stall-after-claim-ms must not be negative") }
        }

        func run() async throws {
            do {
                let url = try database.resolvedURL()
                let schema = try database.resolvedSchema()
                let table = try SQLIdentifier(sinkTable)
                try await withPostgresClient(url, maximumConnections: 2) { client in
                    try await ReliabilitySchema.runner(schema: schema).run(on: client)
                    let tableSink = PostgresTableSink(client: client, schema: schema, table: table)
                    try await tableSink.prepare()
                    let sink: any OutboxSink = stallAfterClaimMs > 0 ? StallingSink(inner: tableSink, stall: .milliseconds(stallAfterClaimMs)) : tableSink
                    let totals = RelayTotals()
                    var options = OutboxRelay.Options(
                        batchSize: batchSize,
                        claimTimeout: .milliseconds(claimTimeoutMs),
                        retryBackoff: Backoff(base: .milliseconds(retryBaseMs), cap: .seconds(300)),
                        onPass: { pass in totals.add(pass) }
                    )
                    if let relayID { options.relayID = relayID }
                    let relay = try OutboxRelay(client: client, schema: schema, sink: sink, options: options)
                    progress("relay \(options.relayID) ready (schema \(schema), sink table \(table))")
                    if untilEmpty {
                        let total = try await relay.drain()
                        print("published \(total.published), failed \(total.failed), parked \(total.parked)")
                        return
                    }
                    try await runUntilSignalled(relay, totals: totals)
                }
            } catch let error as ProdReadyError {
                throw fail(error)
            }
        }

        private func runUntilSignalled(_ relay: OutboxRelay, totals: RelayTotals) async throws {
            let logger = Logger(label: "prodready.outbox", factory: { _ in SwiftLogNoOpLogHandler() })
            let group = ServiceGroup(services: [relay], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                tasks.addTask {
                    var last = RelayPass()
                    while true {
                        try await Task.sleep(for: .seconds(1))
                        let now = totals.current
                        if now != last {
                            progress("published \(now.published) (+\(now.published - last.published)/s), failed \(now.failed), parked \(now.parked)")
                            last = now
                        }
                    }
                }
                try await tasks.next()
                tasks.cancelAll()
            }
            let final = totals.current
            progress("relay stopped: published \(final.published), failed \(final.failed), parked \(final.parked)")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print row counts per status and the parked (dead-letter) rows with their last error.")

        @OptionGroup var database: DatabaseOptions
        @Option(name: .long, help: "Parked rows to list.")
        var limit: Int = 20

        func run() async throws {
            do {
                let schema = try database.resolvedSchema()
                try await withPostgresClient(try database.resolvedURL(), maximumConnections: 1) { client in
                    let outbox = Outbox(client: client, schema: schema)
                    let counts = try await outbox.statusCounts()
                    for status in ["pending", "processing", "published", "failed"] {
                        print("\(status): \(counts[status] ?? 0)")
                    }
                    let parked = try await outbox.parked(limit: max(0, limit))
                    if !parked.isEmpty {
                        print("parked (failed after their last retry; requeue with `prodready outbox requeue`):")
                        for event in parked {
                            print("  \(event.eventID) \(event.eventType) → \(event.subject ?? "-") after \(event.retryCount) attempts: \(event.lastError)")
                        }
                    }
                }
            } catch let error as ProdReadyError {
                throw fail(error)
            }
        }
    }

    struct Requeue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Return failed rows to pending with a fresh retry count.")

        @OptionGroup var database: DatabaseOptions
        @Option(name: .long, help: "Event id to requeue (repeatable).")
        var eventID: [String] = []
        @Flag(name: .long, help: "Requeue every failed row.")
        var allFailed = false

        func validate() throws {
            guard allFailed != !eventID.isEmpty else { throw ValidationError("pass either --event-id (one or more) or --all-failed") }
        }

        func run() async throws {
            do {
                let schema = try database.resolvedSchema()
                try await withPostgresClient(try database.resolvedURL(), maximumConnections: 1) { client in
                    let requeued = try await Outbox(client: client, schema: schema).requeue(eventIDs: allFailed ? nil : eventID)
                    print("requeued \(requeued)")
                }
            } catch let error as ProdReadyError {
                throw fail(error)
            }
        }
    }
}

/// Fault injection for crash tests: holds every claimed batch before handing it on.
struct StallingSink: OutboxSink {
    let inner: any OutboxSink
    let stall: Duration

    func publish(_ records: [OutboxRecord]) async throws -> [Result<Void, ProdReadyError>] {
        try await Task.sleep(for: stall)
        return try await inner.publish(records)
    }
}

/// Running totals the relay's pass callback adds to and the progress printer reads.
final class RelayTotals: Sendable {
    private let totals = Mutex(RelayPass())
    func add(_ pass: RelayPass) { totals.withLock { $0.add(pass) } }
    var current: RelayPass { totals.withLock { $0 } }
}
