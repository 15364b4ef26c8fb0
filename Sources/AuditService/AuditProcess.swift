public import AuditContract
import Foundation
import Hummingbird
public import Logging
import PostgresNIO
import ProdReadyCore
import ProdReadyNATS
import ProdReadyPostgres
import ProdReadyReliability
public import ProdReadyService
import ServiceLifecycle

/// Every setting of the `audit` process, read from options and environment variables and checked at start-up.
public struct AuditSettings: Sendable {
    public var postgresURL: String
    public var schema: String
    public var natsURL: String
    public var subjectPrefix: String
    public var durable: String
    public var ackWait: Duration
    public var maxDeliver: Int?
    public var batchSize: Int
    /// Batches fetched and stored at once.
    public var parallelBatches: Int
    public var retentionInterval: Duration
    public var host: String
    public var port: Int
    public var jwtSecret: String

    public static func read(options: [String: String], home: String, environment: [String: String]? = nil) throws -> AuditSettings {
        let reader = SettingsReader(environment: environment)
        func value(_ flag: String) -> String? { options[flag] }
        let url = reader.text(value("--postgres-url"), flag: "--postgres-url", env: "POSTGRES_URL", secret: true, expected: "postgresql://user:password@host:port/database") { (try? PostgresURL($0)) != nil }
        let schema = reader.text(value("--schema"), flag: "--schema", env: "AUDIT_SCHEMA", default: "audit", expected: "a schema name [a-z_][a-z0-9_]{0,62}") { $0.range(of: "^[a-z_][a-z0-9_]{0,62}$", options: .regularExpression) != nil }
        let nats = reader.text(value("--nats-url"), flag: "--nats-url", env: "NATS_URL", expected: "nats://host:port") { $0.hasPrefix("nats://") || $0.hasPrefix("tls://") }
        let prefix = reader.text(value("--subject-prefix"), flag: "--subject-prefix", env: "AUDIT_SUBJECT_PREFIX", default: "", expected: "empty, or dotted tokens ending in '.' (t1.)") { AuditSubjects.isValidPrefix($0) }
        let durable = reader.text(value("--durable"), flag: "--durable", env: "AUDIT_DURABLE", default: "audit-service", expected: "letters, digits, '_' and '-'") { $0.range(of: "^[A-Za-z0-9_-]{1,100}$", options: .regularExpression) != nil }
        let ackWait = reader.seconds(value("--ack-wait-seconds"), flag: "--ack-wait-seconds", env: "AUDIT_ACK_WAIT_SECONDS", default: 30, range: 1...600)
        let maxDeliver = reader.integer(value("--max-deliver"), flag: "--max-deliver", env: "AUDIT_MAX_DELIVER", default: 0, range: 0...1_000_000, expected: "0 (no limit) or a positive count")
        let batch = reader.integer(value("--batch-size"), flag: "--batch-size", env: "AUDIT_BATCH_SIZE", default: 500, range: 1...5_000, expected: "1 to 5,000")
        let parallel = reader.integer(value("--parallel-batches"), flag: "--parallel-batches", env: "AUDIT_PARALLEL_BATCHES", default: 4, range: 1...32, expected: "1 to 32")
        let retention = reader.seconds(value("--retention-interval-seconds"), flag: "--retention-interval-seconds", env: "AUDIT_RETENTION_INTERVAL_SECONDS", default: 3600, range: 1...604_800)
        let host = reader.text(value("--host"), flag: "--host", env: "AUDIT_HOST", default: "127.0.0.1", expected: "an address to bind")
        let port = reader.integer(value("--port"), flag: "--port", env: "AUDIT_PORT", default: 0, range: 0...65535, expected: "a TCP port")
        let stream = AuditSubjects(prefix: prefix).stream
        if ackWait >= stream.duplicateWindow {
            reader.problem("--ack-wait-seconds", value: "\(ackWait)", expected: "below the stream's duplicate window (\(stream.duplicateWindow))")
        }
        let secret = reader.jwtSecret(home: home)
        try reader.finish()
        return AuditSettings(
            postgresURL: url, schema: schema, natsURL: nats, subjectPrefix: prefix, durable: durable, ackWait: ackWait, maxDeliver: maxDeliver == 0 ? nil : maxDeliver,
            batchSize: batch, parallelBatches: parallel, retentionInterval: retention, host: host, port: port, jwtSecret: secret)
    }
}

/// The `audit` process: consumer, API and housekeeping in one `ServiceGroup`, until SIGTERM or SIGINT.
public enum AuditProcess {
    public static let name = "audit"

    public static func run(settings: AuditSettings, crashPoints: CrashPoints, logger: Logger) async throws {
        let schema = try SQLIdentifier(settings.schema)
        let postgres = PostgresClient(configuration: try PostgresURL(settings.postgresURL).clientConfiguration(maximumConnections: 8), backgroundLogger: logger)
        let store = AuditStore(client: postgres, schema: schema, logger: logger)
        let subjects = AuditSubjects(prefix: settings.subjectPrefix)
        let nats = try await NATSConnection(url: settings.natsURL, name: name)
        let readiness = Readiness(waitingFor: ["migrations", AuditConsumer.joinedCondition])
        let metrics = HTTPMetrics()
        let router = ServiceRouter(title: name, authority: try await TokenAuthority(secret: settings.jwtSecret), metrics: metrics, logger: logger)
        let consumerSettings = AuditConsumer.Settings(subjects: subjects, durable: settings.durable, ackWait: settings.ackWait, maxDeliver: settings.maxDeliver, batchSize: settings.batchSize, parallelBatches: settings.parallelBatches)
        router.addHealthRoutes(checks: [
            HealthCheck("postgres") { _ = try await queryRows(postgres, "SELECT 1", deadline: .seconds(2), doing: "health check", logger: logger) },
            // Without NATS the service still answers queries: degraded, not unhealthy; ingestion resumes by itself.
            HealthCheck.reporting("nats", critical: false) {
                let statistics = try await nats.statistics()
                guard statistics.connected else { throw ProdReadyError(.connectionFailed, "not connected to \(redacted(settings.natsURL))") }
                return ["connected": true, "in_msgs": .int(Int(statistics.inMessages)), "out_msgs": .int(Int(statistics.outMessages)), "reconnects": .int(Int(statistics.reconnects))]
            },
            // Lag is not fatal: the service is degraded while it catches up.
            HealthCheck.reporting("consumer", critical: false) {
                let info = try await nats.consumerInfo(stream: subjects.streamName, consumer: settings.durable)
                return ["stream": .string(info.stream), "durable": .string(info.name), "lag": .int(Int(info.pending)), "ack_pending": .int(info.ackPending), "redelivered": .int(info.redelivered)]
            },
        ], readiness: readiness)
        AuditAPI.addRoutes(to: router, store: store, logger: logger)
        let consumer = AuditConsumer(nats: nats, store: store, settings: consumerSettings, metrics: AuditConsumerMetrics(registry: metrics.registry), readiness: readiness, crashPoints: crashPoints, logger: logger)
        router.addConfigurationRoute(role: AuditAPI.auditor) { [silence = consumer.silence] in
            [
                "service": .string(name),
                "stream": ["name": .string(subjects.streamName), "subjects": [.string(subjects.wildcard)], "duplicate_window_seconds": subjects.stream.duplicateWindow.jsonSeconds],
                "consumer": [
                    "durable": .string(settings.durable), "ack_wait_seconds": settings.ackWait.jsonSeconds, "max_deliver": settings.maxDeliver.map { .int($0) } ?? .null,
                    "batch_size": .int(consumerSettings.batchSize), "parallel_batches": .int(consumerSettings.parallelBatches),
                    "longest_batch_silence_seconds": silence.longest.jsonSeconds,
                ],
                "retention_interval_seconds": settings.retentionInterval.jsonSeconds,
            ]
        }
        let housekeeping = AuditHousekeeping(store: store, interval: settings.retentionInterval, readiness: readiness, logger: logger)
        let prepare: @Sendable () async throws -> Void = {
            try await AuditSchema.runner(schema: schema).run(on: postgres, logger: logger)
            try await nats.createOrUpdateStream(subjects.stream)
            readiness.satisfy("migrations")
        }
        let application = ServiceServer.application(
            router: router, host: settings.host, port: settings.port, services: [postgres, consumer, housekeeping], logger: logger, beforeServerStarts: [prepare],
            onListening: { port in FileHandle.standardOutput.write(Data("listening on http://\(settings.host):\(port)\n".utf8)) })
        try await application.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    }
}
