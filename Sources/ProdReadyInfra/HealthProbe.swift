import ProdReadyCore
import ProdReadyHTTP
import ProdReadyPostgres
import ProdReadyKafka
import ProdReadyNATS
import ProdReadyRedis
import ProdReadyS3
import PostgresNIO
import NIOPosix
import AsyncHTTPClient
import NIOCore
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The result of a health check.
public struct ComponentHealth: Sendable, Codable, CustomStringConvertible {
    public var component: Component
    public var isHealthy: Bool
    /// What was checked or what went wrong.
    public var detail: String
    public var latencyMilliseconds: Double?
    /// The server answered with an error that may pass, or accepted the connection but answered too late (as
    /// opposed to refusing it): checking again may succeed.
    public var failureMayPass: Bool = false

    public init(component: Component, isHealthy: Bool, detail: String, latencyMilliseconds: Double?, failureMayPass: Bool = false) {
        self.component = component
        self.isHealthy = isHealthy
        self.detail = detail
        self.latencyMilliseconds = latencyMilliseconds
        self.failureMayPass = failureMayPass
    }

    public var description: String {
        let latency = latencyMilliseconds.map { String(format1: $0) + " ms" } ?? "-"
        return "\(component.rawValue): \(isHealthy ? "healthy" : "UNHEALTHY") (\(latency)) \(detail)"
    }
}

/// Real client round trips, one per component: what "the component answers" means everywhere in ProdReady.
public enum HealthProbe {
    /// Runs the round trip for `component`, throwing the client's error if it fails.
    public static func roundTrip(_ component: Component, endpoints: StackEndpoints, timeout: Duration = .seconds(5)) async throws -> String {
        switch component {
        case .postgres:
            guard let url = endpoints.postgresURL else { throw missing(component) }
            return try await postgres(url: url)
        case .redis:
            guard let url = endpoints.redisURL else { throw missing(component) }
            return try await redis(url: url, timeout: timeout)
        case .nats:
            guard let url = endpoints.natsURL else { throw missing(component) }
            return try await nats(url: url, timeout: timeout)
        case .s3:
            guard let s3 = endpoints.s3 else { throw missing(component) }
            return try await s3RoundTrip(s3, timeout: timeout)
        case .kafka:
            guard let servers = endpoints.kafkaBootstrapServers else { throw missing(component) }
            return try await kafka(bootstrapServers: servers, timeout: timeout)
        }
    }

    /// `roundTrip` as a report that never throws.
    public static func check(_ component: Component, endpoints: StackEndpoints, timeout: Duration = .seconds(5)) async -> ComponentHealth {
        let clock = ContinuousClock()
        let start = clock.now
        do {
            let detail = try await withDeadline(timeout) { try await roundTrip(component, endpoints: endpoints, timeout: timeout) }
            return ComponentHealth(component: component, isHealthy: true, detail: detail, latencyMilliseconds: (clock.now - start).milliseconds)
        } catch {
            // A server that answered with a transient error, or accepted the connection but was too busy to answer
            // in time (an S3 server on a loaded 2-core machine), is not down; a refused connection is.
            let mayPass = (error as? ProdReadyError).map { ($0.code == .serverError && $0.isRetriable) || $0.code == .timeout } ?? false
            return ComponentHealth(component: component, isHealthy: false, detail: "\(error)", latencyMilliseconds: nil, failureMayPass: mayPass)
        }
    }

    static func missing(_ component: Component) -> ProdReadyError {
        ProdReadyError(.configuration, "no endpoint for \(component) (set \(EnvironmentVariable.name(for: component)))")
    }

    public static func postgres(url: String) async throws -> String {
        let connection = try await connectPostgres(url, logger: quietLogger)
        do {
            let rows = try await connection.query("SELECT 41 + 1 AS answer", logger: quietLogger)
            var answer = 0
            for try await value in rows.decode(Int.self) { answer = value }
            try await connection.close()
            guard answer == 42 else { throw ProdReadyError(.protocolError, "PostgreSQL answered \(answer) to 41 + 1") }
            return "SELECT round trip"
        } catch {
            try? await connection.close()
            throw ProdReadyError(.connectionFailed, "PostgreSQL query failed at \(redacted(url))", retriable: true, underlying: error)
        }
    }

    public static func redis(url: String, timeout: Duration) async throws -> String {
        let connection = try await RedisConnection(url: url, timeout: timeout)
        let key = "prodready:probe:\(getpid()):\(UInt64.random(in: 0...UInt64.max))"
        try await connection.command(["SET", key, "ok", "PX", "10000"])
        let value = try await connection.command(["GET", key])
        guard value.text == "ok" else { throw ProdReadyError(.protocolError, "Redis GET returned \(value) after SET") }
        return "SET/GET round trip"
    }

    public static func nats(url: String, timeout: Duration) async throws -> String {
        let connection = try await NATSConnection(url: url, name: "prodready-probe", connectTimeout: timeout)
        // A memory stream keeps the probe out of the durable store it is checking.
        var stream = JetStreamStreamConfiguration(name: "PRODREADY_PROBE", subjects: ["prodready.probe.>"])
        stream.fileStorage = false
        stream.maxMessages = 100
        try await connection.createOrUpdateStream(stream)
        let subject = "prodready.probe.\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        let ack = try await connection.publish(subject: subject, payload: Array("ping".utf8), timeout: timeout)
        let subscription = try await connection.pullSubscribe(subject: subject, durable: "probe\(ack.sequence)")
        let messages = try await subscription.fetch(batch: 1, timeout: timeout)
        guard let message = messages.first, message.payload == Array("ping".utf8) else {
            throw ProdReadyError(.protocolError, "JetStream did not deliver the probe message on \(subject)")
        }
        try await message.ack()
        return "JetStream publish/ack/fetch round trip (seq \(ack.sequence))"
    }

    public static func s3RoundTrip(_ endpoint: S3Endpoint, timeout: Duration) async throws -> String {
        let client = S3Client(
            configuration: try S3Configuration(endpoint: endpoint.url, accessKey: endpoint.accessKey, secretKey: endpoint.secretKey, region: endpoint.region),
            timeout: timeout
        )
        let bucket = "prodready-probe"
        try await client.createBucket(bucket)
        let key = "probe-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let body = Array("probe \(UInt64.random(in: 0...UInt64.max))".utf8)
        try await client.putObject(bucket: bucket, key: key, body: body)
        let read = try await client.getObject(bucket: bucket, key: key).body
        guard read == body else { throw ProdReadyError(.protocolError, "S3 GET returned different bytes than PUT stored") }
        try await client.deleteObject(bucket: bucket, key: key)
        return "PUT/GET round trip"
    }

    public static func kafka(bootstrapServers: String, timeout: Duration) async throws -> String {
        var configuration = KafkaConfiguration.embedded(bootstrapServers: bootstrapServers, clientID: "prodready-probe")
        configuration.deliveryTimeout = timeout
        let producer = try KafkaProducer(configuration: configuration, idempotent: false)
        let metadata = try await producer.metadata(timeout: timeout)
        guard metadata.brokerCount > 0 else { throw ProdReadyError(.protocolError, "Kafka metadata lists no broker") }
        let topic = "prodready-probe"
        let value = Array("probe \(UInt64.random(in: 0...UInt64.max))".utf8)
        let report = try await producer.send(topic: topic, key: Array("probe".utf8), value: value)
        let consumer = try KafkaConsumer(configuration: configuration, groupID: "prodready-probe")
        try await consumer.assign(topic: topic, partition: report.partition, offset: report.offset)
        let fetched = try await consumer.collect(1, within: timeout)
        try? await consumer.close()
        if fetched.first?.value == value {
            return "metadata + produce + fetch round trip (\(metadata.brokerCount) broker, librdkafka \(loadedLibrdkafkaVersion))"
        }
        throw ProdReadyError(.timeout, "Kafka did not return the produced probe message at \(topic)/\(report.partition)@\(report.offset) within \(timeout)", retriable: true)
    }
}

let quietLogger = Logger(label: "prodready.probe", factory: { _ in SwiftLogNoOpLogHandler() })

extension String {
    init(format1 value: Double) {
        let rounded = (value * 10).rounded() / 10
        self = String(rounded)
    }
}

extension HealthProbe {
    /// The status of a plain GET (0 when nothing answered), with a short detail for messages.
    public static func httpStatus(url: String, timeout: Duration) async -> (status: Int, detail: String) {
        do {
            var request = HTTPClientRequest(url: url)
            request.method = .GET
            let response = try await HTTPClients.failingFast.execute(request, timeout: .milliseconds(timeout.wholeMilliseconds))
            let body = try await response.body.collect(upTo: 64 << 10)
            return (Int(response.status.code), "\(response.status.code) \(String(buffer: body).prefix(200))")
        } catch {
            return (0, "\(error)")
        }
    }
}
