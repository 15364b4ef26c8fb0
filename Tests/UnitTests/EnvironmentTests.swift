import Testing
import ProdReadyCore
import ProdReadyInfra
import ProdReadyPostgres
import ProdReadyRedis

@Suite("Environment discovery")
struct EnvironmentTests {
    @Test("Strict mode comes from CI=true or PRODREADY_REQUIRE_INFRA=1, destructive opt-in from PRODREADY_ALLOW_DESTRUCTIVE")
    func strictness() throws {
        #expect(try InfrastructureSettings(environment: [:]).isStrict == false)
        #expect(try InfrastructureSettings(environment: ["CI": "true"]).isStrict)
        #expect(try InfrastructureSettings(environment: ["PRODREADY_REQUIRE_INFRA": "1"]).isStrict)
        #expect(try InfrastructureSettings(environment: ["CI": "false"]).isStrict == false)
        #expect(try InfrastructureSettings(environment: [:]).allowsDestructive == false)
        #expect(try InfrastructureSettings(environment: ["PRODREADY_ALLOW_DESTRUCTIVE": "1"]).allowsDestructive)
    }

    @Test("Provider defaults to auto; unknown values are refused with the list of valid ones")
    func provider() throws {
        #expect(try InfrastructureSettings(environment: [:]).provider == .auto)
        #expect(try InfrastructureSettings(environment: ["PRODREADY_INFRA": "external"]).provider == .external)
        let error = #expect(throws: ProdReadyError.self) { try InfrastructureSettings(environment: ["PRODREADY_INFRA": "kubernetes"]) }
        #expect(error?.code == .configuration)
        #expect(error?.message.contains("auto|native|compose|external") == true)
    }

    @Test("Endpoints are read from the seed documents' variable names, S3_ENDPOINT_URL as an alias")
    func endpoints() throws {
        let settings = try InfrastructureSettings(environment: [
            "POSTGRES_URL": "postgresql://u:p@db:5432/app",
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
            "NATS_URL": "nats://n:4222",
            "REDIS_URL": "redis://r:6379/2",
            "S3_ENDPOINT_URL": "http://s3:9000",
            "S3_ACCESS_KEY": "ak",
            "S3_SECRET_KEY": "sk",
        ])
        let endpoints = settings.configuredEndpoints
        #expect(endpoints.components == Component.allCases.sorted())
        #expect(endpoints.s3 == S3Endpoint(url: "http://s3:9000", accessKey: "ak", secretKey: "sk", region: "us-east-1"))
        #expect(endpoints.kafkaBootstrapServers == "k1:9092,k2:9092")
    }

    @Test("Malformed variables fail with a message that names the variable", arguments: [
        (["POSTGRES_URL": "mysql://x"], "POSTGRES_URL"),
        (["NATS_URL": "http://x"], "NATS_URL"),
        (["REDIS_URL": "localhost:6379"], "REDIS_URL"),
        (["MINIO_ENDPOINT_URL": "http://x:9000"], "S3_ACCESS_KEY"),
    ])
    func malformed(environment: [String: String], named: String) {
        let error = #expect(throws: ProdReadyError.self) { try InfrastructureSettings(environment: environment) }
        #expect(error?.message.contains(named) == true, "message was: \(error?.message ?? "none")")
    }

    @Test("Export lines quote values for the shell")
    func exportLines() {
        var endpoints = StackEndpoints()
        endpoints.postgresURL = "postgresql://u:it's@h:1/d"
        #expect(endpoints.exportLines == ["export POSTGRES_URL='postgresql://u:it'\\''s@h:1/d'"])
    }

    @Test("Passwords are redacted from URLs shown in messages")
    func redaction() {
        #expect(redacted("postgresql://user:secret@host:5432/db") == "postgresql://user:***@host:5432/db")
        #expect(redacted("redis://host:6379") == "redis://host:6379")
    }

    @Test("Component lists: 'all', start order, each once, unknown names")
    func componentLists() throws {
        #expect(try Component.parseList("all") == Component.allCases.sorted())
        #expect(try Component.parseList("kafka, postgres") == [.postgres, .kafka])
        // The broker's storage is its own, not the stack's S3: asking for Kafka starts Kafka alone.
        #expect(Component.closure([.kafka]) == [.kafka])
        #expect(Component.closure([.kafka, .s3, .kafka]) == [.s3, .kafka])
        let error = #expect(throws: ProdReadyError.self) { try Component.parseList("postgres,mysql") }
        #expect(error?.message.contains("unknown component 'mysql'") == true)
        #expect(throws: ProdReadyError.self) { try Component.parseList(" , ") }
    }

    @Test("PostgreSQL and Redis URLs parse, and bad ones are refused")
    func urlParsing() throws {
        let postgres = try PostgresURL("postgresql://app%40x:p%3Aw@db.local:6543/orders")
        #expect(postgres.user == "app@x")
        #expect(postgres.password == "p:w")
        #expect(postgres.host == "db.local")
        #expect(postgres.port == 6543)
        #expect(postgres.database == "orders")
        #expect(throws: ProdReadyError.self) { try PostgresURL("postgresql://u@h:99999/d") }
        let redis = try RedisEndpoint(url: "redis://:pw@cache:6380/3")
        #expect(redis.host == "cache" && redis.port == 6380 && redis.database == 3)
        #expect(throws: ProdReadyError.self) { try RedisEndpoint(url: "redis://cache:port") }
    }
}
