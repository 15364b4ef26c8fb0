import ArgumentParser
import Foundation
import Logging
import AuditService
import OMSService
import ProdReadyService

/// `prodready serve <process>`: one process of a reference service in the foreground. The OMS's processes share
/// their options (the default subcommand); the audit service has its own.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run one reference-service process: \(OMSProcessKind.allCases.map(\.rawValue).joined(separator: ", ")) or audit.",
        discussion: "prodready serve audit --help lists the audit service's options; prodready serve oms --help the OMS processes'.",
        subcommands: [ServeOMSCommand.self, ServeAuditCommand.self],
        defaultSubcommand: ServeOMSCommand.self
    )
}

/// Runs one OMS process in the foreground until SIGTERM or SIGINT.
struct ServeOMSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "oms-process",
        abstract: "Run one OMS process: \(OMSProcessKind.allCases.map(\.rawValue).joined(separator: ", ")) (prodready serve <process> …).",
        discussion: """
        Every option can also be given by the environment variable named in its help; the option wins. \
        Settings are checked before anything starts: each bad one is printed on a line of its own (credentials \
        redacted) and the process exits with status 2. Once the HTTP server listens, the process prints \
        'listening on http://HOST:PORT' on stdout; /health, /health/ready and /metrics answer without a token. \
        SIGTERM or SIGINT shut it down gracefully with status 0. With PRODREADY_CHAOS=1, \
        CHAOS_CRASH_POINT=<process>:<point> makes the process exit with status 42 at that point.
        """
    )

    @Argument(help: "The process to run: \(OMSProcessKind.allCases.map(\.rawValue).joined(separator: ", ")); <process>@<n> runs a replica under a name of its own.")
    var process: String

    @Option(name: .customLong("postgres-url"), help: "postgresql://user:password@host:port/database. Env: POSTGRES_URL.")
    var postgresURL: String?

    @Option(name: .customLong("schema"), help: "The Postgres schema of the write model, registry and checkpoints (default oms). Env: OMS_SCHEMA.")
    var schema: String?

    @Option(name: .customLong("s3-endpoint-url"), help: "The S3 server, http://host:port (MINIO_ENDPOINT_URL is read too). Env: S3_ENDPOINT_URL.")
    var s3EndpointURL: String?

    @Option(name: .customLong("s3-access-key"), help: "The S3 access key. Env: S3_ACCESS_KEY.")
    var s3AccessKey: String?

    @Option(name: .customLong("s3-secret-key"), help: "The S3 secret key. Env: S3_SECRET_KEY.")
    var s3SecretKey: String?

    @Option(name: .customLong("s3-region"), help: "The S3 region (default us-east-1). Env: S3_REGION.")
    var s3Region: String?

    @Option(name: .customLong("bucket"), help: "The event store's bucket, created if missing (default oms-events). Env: OMS_BUCKET.")
    var bucket: String?

    @Option(name: .customLong("kafka-bootstrap-servers"), help: "host:port[,host:port…]. Env: KAFKA_BOOTSTRAP_SERVERS.")
    var kafkaBootstrapServers: String?

    @Option(name: .customLong("kafka-properties"), help: "Extra librdkafka properties for the process's Kafka clients, key=value[,key=value…] (SASL, TLS or tuning; default none). Env: OMS_KAFKA_PROPERTIES.")
    var kafkaProperties: String?

    @Option(name: .customLong("topic-prefix"), help: "Prefix of the instance_commands and instance_events topics (default none). Env: OMS_TOPIC_PREFIX.")
    var topicPrefix: String?

    @Option(name: .customLong("topic-partitions"), help: "Partitions of instance_commands and instance_events when the process creates them; existing topics keep theirs (default 12: the embedded broker's fetches slow down as a partition grows). Env: OMS_TOPIC_PARTITIONS.")
    var topicPartitions: String?

    @Option(name: .customLong("redis-url"), help: "redis://[:password@]host:port[/db]. Env: REDIS_URL.")
    var redisURL: String?

    @Option(name: .customLong("redis-prefix"), help: "Prefix of the command-status and read-model keys (default oms:). Env: OMS_REDIS_PREFIX.")
    var redisPrefix: String?

    @Option(name: .customLong("group-prefix"), help: "Prefix of the workers' consumer groups (default none). Env: OMS_GROUP_PREFIX.")
    var groupPrefix: String?

    @Option(name: .customLong("host"), help: "The address the HTTP server binds (default 127.0.0.1). Env: OMS_HOST.")
    var host: String?

    @Option(name: .customLong("port"), help: "The HTTP port; 0 picks a free one and prints it (default 0). Env: OMS_PORT.")
    var port: String?

    @Option(name: .customLong("lease-seconds"), help: "A worker's claim lease in seconds (default 5). Env: OMS_LEASE_SECONDS.")
    var leaseSeconds: String?

    @Option(name: .customLong("heartbeat-seconds"), help: "How often a worker renews its lease, at most a third of the lease (default 1). Env: OMS_HEARTBEAT_SECONDS.")
    var heartbeatSeconds: String?

    @Option(name: .customLong("nats-url"), help: "The NATS server the oms-outbox-relay publishes audit events to, nats://host:port (only the relay needs it). Env: NATS_URL.")
    var natsURL: String?

    @Option(name: .customLong("audit-subject-prefix"), help: "Prefix of the audit subjects, empty or dotted tokens ending in '.'; the stream is AUDIT or AUDIT_<PREFIX> (default none). Env: OMS_AUDIT_SUBJECT_PREFIX.")
    var auditSubjectPrefix: String?

    @Option(name: .customLong("gap-timeout-seconds"), help: "How long the publisher waits for a reserved sequence before closing it with a tombstone (default 5). Env: OMS_GAP_TIMEOUT_SECONDS.")
    var gapTimeoutSeconds: String?

    @OptionGroup var common: CommonOptions

    /// `oms-instance-worker@2` is a second instance worker: the same process, a name of its own, so a deployment
    /// (and a chaos scenario) can tell replicas apart.
    var kind: OMSProcessKind? {
        let parts = process.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 1 || (parts.count == 2 && !parts[1].isEmpty && parts[1].allSatisfy(\.isNumber)) else { return nil }
        return OMSProcessKind(rawValue: String(parts[0]))
    }

    func validate() throws {
        guard kind != nil else {
            throw ValidationError("unknown process '\(process)'; one of \(OMSProcessKind.allCases.map(\.rawValue).joined(separator: ", ")), each optionally with @<n> for a replica")
        }
    }

    var optionValues: [String: String] {
        let values: [String: String?] = [
            "--postgres-url": postgresURL,
            "--schema": schema,
            "--s3-endpoint-url": s3EndpointURL,
            "--s3-access-key": s3AccessKey,
            "--s3-secret-key": s3SecretKey,
            "--s3-region": s3Region,
            "--bucket": bucket,
            "--kafka-bootstrap-servers": kafkaBootstrapServers,
            "--kafka-properties": kafkaProperties,
            "--topic-prefix": topicPrefix,
            "--topic-partitions": topicPartitions,
            "--redis-url": redisURL,
            "--redis-prefix": redisPrefix,
            "--group-prefix": groupPrefix,
            "--host": host,
            "--port": port,
            "--lease-seconds": leaseSeconds,
            "--heartbeat-seconds": heartbeatSeconds,
            "--gap-timeout-seconds": gapTimeoutSeconds,
            "--nats-url": natsURL,
            "--audit-subject-prefix": auditSubjectPrefix,
        ]
        return values.compactMapValues { $0 }
    }

    func run() async throws {
        let kind = self.kind!
        // A replica answers to its own name for crash points: CHAOS_CRASH_POINT=oms-instance-worker:… leaves @2 alone.
        try await serveProcess(process, crashPoints: kind.crashPoints, settings: { try OMSSettings.read(options: optionValues, home: common.resolvedHome, process: kind) }) {
            try await OMSProcess.run(kind, settings: $0, crashPoints: $1, logger: $2)
        }
    }
}

/// What every `serve` subcommand does: read and check the settings and crash points (each problem on a line of its
/// own, exit status 2), make the logger (`LOG_LEVEL`), say which crash points are armed, then run the process.
func serveProcess<Settings>(
    _ name: String, crashPoints known: Set<String>, settings read: () throws -> Settings,
    run: (Settings, CrashPoints, Logger) async throws -> Void
) async throws {
    let settings: Settings
    let crashPoints: CrashPoints
    do {
        settings = try read()
        crashPoints = try CrashPoints(process: name, known: known)
    } catch {
        FileHandle.standardError.write(Data("prodready serve \(name): \(error)\n".utf8))
        throw ExitCode(2)
    }
    var logger = Logger(label: name, factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
    if !crashPoints.armed.isEmpty {
        logger.notice("crash points armed", metadata: ["points": "\(crashPoints.armed.sorted())"])
    }
    try await run(settings, crashPoints, logger)
}

/// Runs the audit service's process in the foreground until SIGTERM or SIGINT.
struct ServeAuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Run the audit service: the AUDIT stream's consumer, the audit API and the retention job.",
        discussion: """
        Every option can also be given by the environment variable named in its help; the option wins. Settings are \
        checked before anything starts: each bad one is printed on a line of its own (credentials redacted) and the \
        process exits with status 2. It creates or updates the stream, migrates its schema, binds its durable \
        consumer, and prints 'listening on http://HOST:PORT'; /health (Postgres, NATS with its message counts, consumer \
        lag), /health/ready and /metrics answer without a token, the API needs a bearer token with the role auditor \
        (audit-admin to change retention). SIGTERM or SIGINT shut it down gracefully with status 0, leaving \
        unacknowledged events to be redelivered. With PRODREADY_CHAOS=1, CHAOS_CRASH_POINT=audit:<point> \
        (\(AuditConsumer.crashPointNames.sorted().joined(separator: ", "))) exits with status 42 at that point.
        """
    )

    @Option(name: .customLong("postgres-url"), help: "postgresql://user:password@host:port/database. Env: POSTGRES_URL.")
    var postgresURL: String?

    @Option(name: .customLong("schema"), help: "The Postgres schema of the audit tables (default audit). Env: AUDIT_SCHEMA.")
    var schema: String?

    @Option(name: .customLong("nats-url"), help: "The NATS server with JetStream, nats://host:port. Env: NATS_URL.")
    var natsURL: String?

    @Option(name: .customLong("subject-prefix"), help: "Prefix of the audit subjects, empty or dotted tokens ending in '.'; the stream is AUDIT or AUDIT_<PREFIX> (default none). Env: AUDIT_SUBJECT_PREFIX.")
    var subjectPrefix: String?

    @Option(name: .customLong("durable"), help: "The durable consumer's name, also consumer_name in event_consumer_tracking (default audit-service). Env: AUDIT_DURABLE.")
    var durable: String?

    @Option(name: .customLong("ack-wait-seconds"), help: "How long a fetched batch may stay unacknowledged before it is redelivered; below the stream's 120 s duplicate window (default 30). Env: AUDIT_ACK_WAIT_SECONDS.")
    var ackWaitSeconds: String?

    @Option(name: .customLong("max-deliver"), help: "Deliveries of one message at most; 0 never gives an event up (default 0). Env: AUDIT_MAX_DELIVER.")
    var maxDeliver: String?

    @Option(name: .customLong("batch-size"), help: "Events fetched and stored per transaction, 1 to 5,000 (default 500). Env: AUDIT_BATCH_SIZE.")
    var batchSize: String?

    @Option(name: .customLong("parallel-batches"), help: "Batches fetched and stored at once, 1 to 32 (default 4). Env: AUDIT_PARALLEL_BATCHES.")
    var parallelBatches: String?

    @Option(name: .customLong("retention-interval-seconds"), help: "How often the retention job runs (default 3600). Env: AUDIT_RETENTION_INTERVAL_SECONDS.")
    var retentionIntervalSeconds: String?

    @Option(name: .customLong("host"), help: "The address the HTTP server binds (default 127.0.0.1). Env: AUDIT_HOST.")
    var host: String?

    @Option(name: .customLong("port"), help: "The HTTP port; 0 picks a free one and prints it (default 0). Env: AUDIT_PORT.")
    var port: String?

    @OptionGroup var common: CommonOptions

    var optionValues: [String: String] {
        let values: [String: String?] = [
            "--postgres-url": postgresURL, "--schema": schema, "--nats-url": natsURL, "--subject-prefix": subjectPrefix, "--durable": durable,
            "--ack-wait-seconds": ackWaitSeconds, "--max-deliver": maxDeliver, "--batch-size": batchSize, "--parallel-batches": parallelBatches,
            "--retention-interval-seconds": retentionIntervalSeconds, "--host": host, "--port": port,
        ]
        return values.compactMapValues { $0 }
    }

    func run() async throws {
        try await serveProcess(AuditProcess.name, crashPoints: AuditConsumer.crashPointNames, settings: { try AuditSettings.read(options: optionValues, home: common.resolvedHome) }) {
            try await AuditProcess.run(settings: $0, crashPoints: $1, logger: $2)
        }
    }
}
