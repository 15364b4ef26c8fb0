import ProdReadyCore
import ProdReadyInfra
import ProdReadyKafka
import ProdReadyNATS
import ProdReadyRedis
import ProdReadyS3
import PostgresNIO
import TestSupport
import Logging

/// Writes recognisable data into a component and later checks it is all still there, through the same real
/// clients any user would use.
struct DataMarker {
    let component: Component
    let token = uniqueName("marker")
    /// Where the Kafka messages landed.
    var kafkaPartition: Int32 = 0

    static let logger = Logger(label: "marker", factory: { _ in SwiftLogNoOpLogHandler() })

    init(component: Component) {
        self.component = component
    }

    mutating func write(_ endpoints: StackEndpoints) async throws {
        switch component {
        case .postgres:
            try await withPostgresConnection(endpoints.postgresURL!) { [token] connection in
                try await connection.query("CREATE TABLE marker (token text, n bigint, PRIMARY KEY (token, n))", logger: Self.logger)
                for n in 1...3 {
                    try await connection.query("INSERT INTO marker VALUES (\(token), \(n))", logger: Self.logger)
                }
            }
        case .redis:
            let connection = try await RedisConnection(url: endpoints.redisURL!)
            try await connection.command(["SET", "marker", token])
            try await connection.command(["RPUSH", "marker-list", "a", "b", "c"])
        case .nats:
            let connection = try await NATSConnection(url: endpoints.natsURL!)
            try await connection.createOrUpdateStream(JetStreamStreamConfiguration(name: "MARKER", subjects: ["marker.>"]))
            for n in 1...3 {
                _ = try await connection.publish(subject: "marker.\(n)", payload: Array("\(token)-\(n)".utf8), messageID: "\(token)-\(n)")
            }
        case .kafka:
            let producer = try KafkaProducer(configuration: .embedded(bootstrapServers: endpoints.kafkaBootstrapServers!))
            for n in 1...5 {
                let report = try await producer.send(topic: "marker", key: Array("k".utf8), value: Array("\(token)-\(n)".utf8))
                kafkaPartition = report.partition
            }
        case .s3:
            let s3 = endpoints.s3!
            let client = S3Client(configuration: try S3Configuration(endpoint: s3.url, accessKey: s3.accessKey, secretKey: s3.secretKey, region: s3.region))
            try await client.createBucket("marker")
            try await client.putObject(bucket: "marker", key: "deep/key.txt", body: Array(token.utf8))
        }
    }

    /// Returns a description of what is missing, or nil when everything written is there.
    func missing(_ endpoints: StackEndpoints) async throws -> String? {
        switch component {
        case .postgres:
            let found = try await withPostgresConnection(endpoints.postgresURL!) { [token] connection in
                let rows = try await connection.query("SELECT n FROM marker WHERE token = \(token) ORDER BY n", logger: Self.logger)
                var found: [Int] = []
                for try await n in rows.decode(Int.self) { found.append(n) }
                return found
            }
            return found == [1, 2, 3] ? nil : "marker rows \(found), expected [1, 2, 3]"
        case .redis:
            let connection = try await RedisConnection(url: endpoints.redisURL!)
            let value = try await connection.command(["GET", "marker"])
            let list = try await connection.command(["LRANGE", "marker-list", "0", "-1"])
            guard value.text == token else { return "GET marker returned \(value)" }
            guard list == .array(["a", "b", "c"].map { .string(Array($0.utf8)) }) else { return "LRANGE returned \(list)" }
            return nil
        case .nats:
            let connection = try await NATSConnection(url: endpoints.natsURL!)
            let subscription = try await connection.pullSubscribe(subject: "marker.>", durable: uniqueName("check").replacingAll("-", with: "_"))
            var payloads: [String] = []
            for _ in 0..<3 where payloads.count < 3 {
                for message in try await subscription.fetch(batch: 3 - payloads.count, timeout: .seconds(2)) {
                    payloads.append(String(decoding: message.payload, as: UTF8.self))
                    try await message.ack()
                }
            }
            let expected = (1...3).map { "\(token)-\($0)" }
            return payloads == expected ? nil : "stream returned \(payloads), expected \(expected)"
        case .kafka:
            let consumer = try KafkaConsumer(configuration: .embedded(bootstrapServers: endpoints.kafkaBootstrapServers!), groupID: uniqueName("check"))
            try await consumer.assign(topic: "marker", partition: kafkaPartition, offset: 0)
            let values = try await consumer.collect(5, within: .seconds(10)).map(\.text)
            try? await consumer.close()
            let expected = (1...5).map { "\(token)-\($0)" }
            return values == expected ? nil : "partition \(kafkaPartition) returned \(values), expected \(expected)"
        case .s3:
            let s3 = endpoints.s3!
            let client = S3Client(configuration: try S3Configuration(endpoint: s3.url, accessKey: s3.accessKey, secretKey: s3.secretKey, region: s3.region))
            let body = try await client.getObject(bucket: "marker", key: "deep/key.txt").body
            return body == Array(token.utf8) ? nil : "object holds \(String(decoding: body, as: UTF8.self))"
        }
    }
}
