import AuditContract
import Foundation
import Hummingbird
public import Logging
import OMSContract
import PostgresNIO
import ProdReadyCore
import ProdReadyKafka
import ProdReadyNATS
import ProdReadyPostgres
import ProdReadyRedis
import ProdReadyReliability
import ProdReadyS3
import ProdReadySinks
public import ProdReadyService
import ServiceLifecycle

/// The OMS's four processes (SPEC-oms "Processes").
public enum OMSProcessKind: String, Sendable, CaseIterable {
    case api = "oms"
    case publisher = "oms-publisher"
    case instanceWorker = "oms-instance-worker"
    case projectionWorker = "oms-projection-worker"
    /// Publishes the audit outbox to NATS JetStream (SPEC-audit); a process of its own so a test can kill it alone.
    case outboxRelay = "oms-outbox-relay"

    public var crashPoints: Set<String> {
        switch self {
        case .api: []
        case .publisher: OMSPublisher.crashPointNames
        case .instanceWorker: OMSInstanceWorker.crashPointNames
        case .projectionWorker: OMSProjectionWorker.crashPointNames
        case .outboxRelay: []
        }
    }
}

/// The audit outbox relay's timing: one definition for the relay process and for the configuration the API reports.
public enum OMSOutboxRelayTiming {
    /// A relay that dies holding rows delays them this long before another claims them.
    public static let claimTimeout: Duration = .seconds(10)
    /// The longest pause between two attempts at a failed publish.
    public static let retryCap: Duration = .seconds(60)
    /// How long a publish waits for the stream's acknowledgement before it counts as failed.
    public static let publishAckTimeout: Duration = .seconds(5)
    /// The longest time from a publish the stream stored (its acknowledgement lost) to the relay sending the same event
    /// again: the stream's duplicate window must cover it, or the retry is stored twice.
    public static var retryHorizon: Duration { max(claimTimeout, retryCap) + publishAckTimeout }
}

/// Every setting of an OMS process, read from options and environment variables and checked at start-up.
public struct OMSSettings: Sendable {
    public var postgresURL: String
    public var schema: String
    public var s3Endpoint: String
    public var s3AccessKey: String
    public var s3SecretKey: String
    public var s3Region: String
    public var bucket: String
    public var kafkaServers: String
    /// librdkafka properties applied on top of the embedded profile (SASL, TLS, tuning).
    public var kafkaProperties: [String: String]
    public var topicPrefix: String
    /// Partitions of the two topics when this process creates them (existing topics keep theirs).
    public var topicPartitions: Int
    public var redisURL: String
    public var redisPrefix: String
    public var groupPrefix: String
    public var host: String
    public var port: Int
    public var lease: Duration
    public var heartbeat: Duration
    public var gapTimeout: Duration
    public var jwtSecret: String
    /// The NATS server the outbox relay publishes audit events to (only the relay needs it).
    public var natsURL: String
    /// Prefix of the audit subjects (`<prefix>audit.…`), which also names the stream (`AUDIT_<PREFIX>`).
    public var auditSubjectPrefix: String

    /// Reads and checks every setting; all problems are reported at once.
    public static func read(options: [String: String], home: String, environment: [String: String]? = nil, process: OMSProcessKind? = nil) throws -> OMSSettings {
        let reader = SettingsReader(environment: environment)
        let env = reader.environment
        func value(_ flag: String) -> String? { options[flag] }
        let url = reader.text(value("--postgres-url"), flag: "--postgres-url", env: "POSTGRES_URL", secret: true, expected: "postgresql://user:password@host:port/database") { (try? PostgresURL($0)) != nil }
        let schema = reader.text(value("--schema"), flag: "--schema", env: "OMS_SCHEMA", default: "oms", expected: "a schema name [a-z_][a-z0-9_]{0,62}") { $0.range(of: "^[a-z_][a-z0-9_]{0,62}$", options: .regularExpression) != nil }
        let s3Fallback = env["MINIO_ENDPOINT_URL"].flatMap { $0.isEmpty ? nil : $0 }
        let s3 = reader.text(value("--s3-endpoint-url"), flag: "--s3-endpoint-url", env: "S3_ENDPOINT_URL", default: s3Fallback, expected: "http://host:port") { (try? S3Configuration(endpoint: $0, accessKey: "k", secretKey: "s")) != nil }
        let accessKey = reader.text(value("--s3-access-key"), flag: "--s3-access-key", env: "S3_ACCESS_KEY", expected: "the S3 access key")
        let secretKey = reader.text(value("--s3-secret-key"), flag: "--s3-secret-key", env: "S3_SECRET_KEY", secret: true, expected: "the S3 secret key")
        let region = reader.text(value("--s3-region"), flag: "--s3-region", env: "S3_REGION", default: "us-east-1", expected: "a region name")
        let bucket = reader.text(value("--bucket"), flag: "--bucket", env: "OMS_BUCKET", default: "oms-events", expected: "a bucket name [a-z0-9][a-z0-9.-]{2,62}") { $0.range(of: "^[a-z0-9][a-z0-9.-]{2,62}$", options: .regularExpression) != nil }
        let kafka = reader.text(value("--kafka-bootstrap-servers"), flag: "--kafka-bootstrap-servers", env: "KAFKA_BOOTSTRAP_SERVERS", expected: "host:port[,host:port…]") { text in
            text.split(separator: ",").allSatisfy { server in server.split(separator: ":").last.flatMap { Int($0) }.map { (1...65535).contains($0) } ?? false }
        }
        let kafkaProperties = reader.text(value("--kafka-properties"), flag: "--kafka-properties", env: "OMS_KAFKA_PROPERTIES", default: "", expected: "key=value[,key=value…]") {
            OMSSettings.keyValues($0) != nil
        }
        let topicPrefix = reader.text(value("--topic-prefix"), flag: "--topic-prefix", env: "OMS_TOPIC_PREFIX", default: "", expected: "letters, digits, '.', '_' and '-'") { $0.range(of: "^[A-Za-z0-9._-]{0,100}$", options: .regularExpression) != nil }
        // The embedded broker lists every stored batch of a partition on each fetch that has something to return,
        // so a fetch's cost grows with the partition: 12 partitions keep each a quarter of 3's (docs/PERFORMANCE.md,
        // "OMS chaos"). Ordering is per aggregate, which any partition count keeps.
        let partitions = reader.integer(value("--topic-partitions"), flag: "--topic-partitions", env: "OMS_TOPIC_PARTITIONS", default: 12, range: 1...1000, expected: "a partition count")
        let redis = reader.text(value("--redis-url"), flag: "--redis-url", env: "REDIS_URL", secret: true, expected: "redis://[:password@]host:port[/db]") { (try? RedisEndpoint(url: $0)) != nil }
        let redisPrefix = reader.text(value("--redis-prefix"), flag: "--redis-prefix", env: "OMS_REDIS_PREFIX", default: "oms:", expected: "a key prefix without spaces") { !$0.contains(" ") }
        let groupPrefix = reader.text(value("--group-prefix"), flag: "--group-prefix", env: "OMS_GROUP_PREFIX", default: "", expected: "letters, digits, '.', '_' and '-'") { $0.range(of: "^[A-Za-z0-9._-]{0,100}$", options: .regularExpression) != nil }
        let host = reader.text(value("--host"), flag: "--host", env: "OMS_HOST", default: "127.0.0.1", expected: "an address to bind")
        let port = reader.integer(value("--port"), flag: "--port", env: "OMS_PORT", default: 0, range: 0...65535, expected: "a TCP port")
        let lease = reader.seconds(value("--lease-seconds"), flag: "--lease-seconds", env: "OMS_LEASE_SECONDS", default: 5, range: 0.5...3600)
        let heartbeat = reader.seconds(value("--heartbeat-seconds"), flag: "--heartbeat-seconds", env: "OMS_HEARTBEAT_SECONDS", default: 1, range: 0.1...1200)
        let gap = reader.seconds(value("--gap-timeout-seconds"), flag: "--gap-timeout-seconds", env: "OMS_GAP_TIMEOUT_SECONDS", default: 5, range: 0.1...3600)
        let nats = reader.text(value("--nats-url"), flag: "--nats-url", env: "NATS_URL", default: "", expected: "nats://host:port") { $0.isEmpty || $0.hasPrefix("nats://") || $0.hasPrefix("tls://") }
        if process == .outboxRelay && nats.isEmpty {
            reader.problem("--nats-url", value: nil, expected: "nats://host:port: the outbox relay publishes audit events there (or set NATS_URL)")
        }
        let auditPrefix = reader.text(value("--audit-subject-prefix"), flag: "--audit-subject-prefix", env: "OMS_AUDIT_SUBJECT_PREFIX", default: "", expected: "empty, or dotted tokens ending in '.' (t1.)") {
            AuditSubjects.isValidPrefix($0)
        }
        if heartbeat * 3 > lease {
            reader.problem("--heartbeat-seconds", value: "\(heartbeat)", expected: "at most a third of the lease (\(lease)), so two missed beats still keep it")
        }
        let secret = reader.jwtSecret(home: home)
        try reader.finish()
        return OMSSettings(
            postgresURL: url, schema: schema, s3Endpoint: s3, s3AccessKey: accessKey, s3SecretKey: secretKey, s3Region: region, bucket: bucket, kafkaServers: kafka,
            kafkaProperties: OMSSettings.keyValues(kafkaProperties) ?? [:],
            topicPrefix: topicPrefix, topicPartitions: partitions, redisURL: redis, redisPrefix: redisPrefix, groupPrefix: groupPrefix, host: host, port: port, lease: lease, heartbeat: heartbeat,
            gapTimeout: gap, jwtSecret: secret, natsURL: nats, auditSubjectPrefix: auditPrefix)
    }
}

extension OMSSettings {
    /// `key=value[,key=value…]` as a dictionary; nil when an entry has no `=` or an empty key. Empty text is none.
    static func keyValues(_ text: String) -> [String: String]? {
        var result: [String: String] = [:]
        for entry in text.split(separator: ",") {
            guard let equals = entry.firstIndex(of: "=") else { return nil }
            let key = entry[..<equals].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty else { return nil }
            result[key] = entry[entry.index(after: equals)...].trimmingCharacters(in: .whitespaces)
        }
        return result
    }
}

/// Runs one OMS process until SIGTERM or SIGINT, then shuts down gracefully (the worker finishes or hands back
/// the message in hand, the server stops taking requests) and returns.
public enum OMSProcess {
    public static func run(_ kind: OMSProcessKind, settings: OMSSettings, crashPoints: CrashPoints, logger: Logger) async throws {
        let schema = try SQLIdentifier(settings.schema)
        let postgres = PostgresClient(configuration: try PostgresURL(settings.postgresURL).clientConfiguration(maximumConnections: 8), backgroundLogger: logger)
        // The API answers a client that waits: a dependency that does not answer within 2 s (Postgres) or 3 s
        // (S3) is reported as a 503 with Retry-After instead of holding the request. The background processes
        // retry on their own and allow more.
        let isAPI = kind == .api
        let postgresDeadline: Duration = isAPI ? .seconds(2) : .seconds(10)
        let s3 = S3Client(
            configuration: try S3Configuration(endpoint: settings.s3Endpoint, accessKey: settings.s3AccessKey, secretKey: settings.s3SecretKey, region: settings.s3Region),
            timeout: isAPI ? .seconds(3) : .seconds(10))
        let store = OMSEventStore(s3: s3, bucket: settings.bucket, allocator: try SequenceAllocator(client: postgres, schema: schema, aggregateType: OMSEventStore.allocatorType, operationTimeout: isAPI ? postgresDeadline : .seconds(5)))
        let redis = try RedisClient(url: settings.redisURL)
        let readStore = OMSReadStore(redis: redis, prefix: settings.redisPrefix)
        let auditTrail = OMSAuditTrail(outbox: Outbox(client: postgres, schema: schema, logger: logger), subjects: AuditSubjects(prefix: settings.auditSubjectPrefix), logger: logger)
        let writeModel = OMSWriteModel(client: postgres, schema: schema, logger: logger, deadline: postgresDeadline, auditTrail: auditTrail)
        let topics = OMSTopics(prefix: settings.topicPrefix)
        var kafka = KafkaConfiguration.embedded(bootstrapServers: settings.kafkaServers, clientID: kind.rawValue)
        kafka.properties.merge(settings.kafkaProperties) { _, given in given }
        // The embedded broker (Tansu) answers a fetch only when fetch.wait.max.ms ran out, even when a message
        // arrived meanwhile: librdkafka's 500 ms default put up to half a second on each of the two hops.
        var consumerConfiguration = kafka
        consumerConfiguration.properties.merge(["fetch.wait.max.ms": "20"]) { given, _ in given }
        consumerConfiguration.sessionTimeoutMilliseconds = OMSWorkerSettings.groupSessionTimeoutMilliseconds
        let isWorker = kind == .instanceWorker || kind == .projectionWorker
        let readiness = Readiness(waitingFor: isWorker ? ["migrations", OMSWorkerSettings.joinedCondition] : ["migrations"])
        let authority = try await TokenAuthority(secret: settings.jwtSecret)
        let router = ServiceRouter(title: kind.rawValue, authority: authority, metrics: HTTPMetrics(), logger: logger)
        let admin = try KafkaAdmin(configuration: kafka)

        let postgresCheck = HealthCheck("postgres") { _ = try await queryRows(postgres, "SELECT 1", deadline: .seconds(2), doing: "health check", logger: logger) }
        let s3Check = HealthCheck("s3") { _ = try await s3.bucketExists(settings.bucket) }
        let kafkaCheck = HealthCheck("kafka") { _ = try await admin.metadata(timeout: .seconds(2)) }
        var services: [any Service] = [postgres]
        var workerSettings = OMSWorkerSettings(topics: topics, groupID: settings.groupPrefix + kind.rawValue, lease: settings.lease, heartbeat: settings.heartbeat)
        workerSettings.readiness = readiness
        let owner = "\(kind.rawValue)-\(ProcessInfo.processInfo.hostName)-\(getpid())"
        let registryOptions = ProcessedEventRegistry.Options(owner: owner, leaseTimeout: settings.lease, operationTimeout: .seconds(5))
        switch kind {
        case .api:
            // Refused writes are audited; refused reads are not (SPEC-audit: what matters to auditors).
            router.onRefused = { refusal in
                guard refusal.method != .get else { return }
                // A request without a valid token names no tenant; one aimed at a database is shown to the tenant
                // that owns it, whose auditors want to see who knocked.
                var owner: String?
                if refusal.identity == nil, let database = OMSAuditTrail.database(inRoute: refusal.route, path: refusal.path) {
                    owner = try? await withDeadline(.seconds(1)) { try await writeModel.owner(of: database) }
                }
                await auditTrail.refused(OMSAuditTrail.accessDenied(refusal, databaseOwner: owner), requestID: refusal.requestID)
            }
            router.addHealthRoutes(checks: [postgresCheck, s3Check, HealthCheck("redis", critical: false) { try await readStore.ping() }], readiness: readiness, envelope: .successData)
            let aggregates = try SequenceAllocator(client: postgres, schema: schema, aggregateType: OMSAPIDependencies.aggregateType, operationTimeout: postgresDeadline)
            OMSAPI.addRoutes(to: router, OMSAPIDependencies(store: store, writeModel: writeModel, readStore: readStore, aggregates: aggregates, logger: logger))
            let sessionTimeout = consumerConfiguration.properties["session.timeout.ms"].flatMap { Int($0) } ?? consumerConfiguration.sessionTimeoutMilliseconds ?? 45_000
            router.addConfigurationRoute(role: .reader) {
                let stream = AuditSubjects(prefix: settings.auditSubjectPrefix).stream
                return [
                    "service": "oms",
                    "workers": ["lease_seconds": settings.lease.jsonSeconds, "heartbeat_seconds": settings.heartbeat.jsonSeconds],
                    "publisher": ["gap_timeout_seconds": settings.gapTimeout.jsonSeconds],
                    "topics": ["commands": .string(topics.commands), "events": .string(topics.events), "partitions_when_created": .int(settings.topicPartitions)],
                    "kafka": ["session_timeout_ms": .int(sessionTimeout)],
                    "outbox_relay": [
                        "claim_timeout_seconds": OMSOutboxRelayTiming.claimTimeout.jsonSeconds, "retry_cap_seconds": OMSOutboxRelayTiming.retryCap.jsonSeconds,
                        "publish_ack_timeout_seconds": OMSOutboxRelayTiming.publishAckTimeout.jsonSeconds, "retry_horizon_seconds": OMSOutboxRelayTiming.retryHorizon.jsonSeconds,
                    ],
                    "audit_stream": ["name": .string(stream.name), "duplicate_window_seconds": stream.duplicateWindow.jsonSeconds],
                ]
            }
        case .publisher:
            router.addHealthRoutes(checks: [postgresCheck, s3Check, kafkaCheck], readiness: readiness)
            let producer = try KafkaProducer(configuration: kafka)
            services.append(OMSPublisher(store: store, postgres: postgres, schema: schema, producer: producer, settings: .init(topics: topics, gapTimeout: settings.gapTimeout), crashPoints: crashPoints, readiness: readiness, logger: logger))
        case .instanceWorker:
            router.addHealthRoutes(checks: [postgresCheck, s3Check, kafkaCheck], readiness: readiness)
            let consumer = try KafkaConsumer(configuration: consumerConfiguration, groupID: workerSettings.groupID, autoCommitInterval: OMSWorkerSettings.commitInterval)
            services.append(OMSInstanceWorker(
                consumer: consumer, registry: try ProcessedEventRegistry(client: postgres, schema: schema, options: registryOptions), writeModel: writeModel,
                store: store, readStore: readStore, settings: workerSettings, crashPoints: crashPoints, logger: logger))
        case .projectionWorker:
            router.addHealthRoutes(checks: [postgresCheck, kafkaCheck, HealthCheck("redis") { try await readStore.ping() }], readiness: readiness)
            let consumer = try KafkaConsumer(configuration: consumerConfiguration, groupID: workerSettings.groupID, autoCommitInterval: OMSWorkerSettings.commitInterval)
            services.append(OMSProjectionWorker(
                consumer: consumer, registry: try ProcessedEventRegistry(client: postgres, schema: schema, options: registryOptions), readStore: readStore,
                settings: workerSettings, crashPoints: crashPoints, logger: logger))
        case .outboxRelay:
            let nats = try await NATSConnection(url: settings.natsURL, name: kind.rawValue)
            let subjects = AuditSubjects(prefix: settings.auditSubjectPrefix)
            router.addHealthRoutes(checks: [postgresCheck, HealthCheck("nats") { try await nats.flush(timeout: .seconds(2)) }], readiness: readiness)
            try await nats.createOrUpdateStream(subjects.stream)
            let options = OutboxRelay.Options(
                relayID: owner, batchSize: 200, claimTimeout: OMSOutboxRelayTiming.claimTimeout, idleDelay: .milliseconds(20),
                retryBackoff: Backoff(base: .milliseconds(500), cap: OMSOutboxRelayTiming.retryCap))
            services.append(try OutboxRelay(client: postgres, schema: schema, sink: try JetStreamSink(connection: nats, ackTimeout: OMSOutboxRelayTiming.publishAckTimeout), options: options, logger: logger))
        }

        let prepare: @Sendable () async throws -> Void = {
            try await OMSSchema.runner(schema: schema).run(on: postgres, logger: logger)
            if kind == .api || kind == .publisher {
                if try await !s3.bucketExists(settings.bucket) { try await s3.createBucket(settings.bucket) }
            }
            if kind != .api && kind != .outboxRelay {
                // Keyed by aggregate, so one aggregate's events stay in order on one partition.
                for topic in [topics.commands, topics.events] {
                    try await admin.createTopic(topic, partitions: settings.topicPartitions, allowExisting: true, timeout: .seconds(30))
                }
            }
            readiness.satisfy("migrations")
        }
        let application = ServiceServer.application(
            router: router, host: settings.host, port: settings.port, services: services, logger: logger, beforeServerStarts: [prepare],
            onListening: { port in
                // The line the deployment helper and `prodready up` wait for.
                FileHandle.standardOutput.write(Data("listening on http://\(settings.host):\(port)\n".utf8))
            })
        try await application.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    }
}
