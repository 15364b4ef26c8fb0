// swift-tools-version: 6.1
import PackageDescription

// librdkafka older than 2.x talks to Apache Kafka but not to the Tansu broker the embedded stack runs.
// `scripts/bootstrap` puts a newer librdkafka (shipped inside a PyPI wheel) in `.prodready/lib`; the runtime
// search path below makes every binary this package builds load it before the Debian one, with no
// LD_LIBRARY_PATH for the user to remember. Without that directory the Debian library is used.
let bundledLibraryDirectory = Context.packageDirectory + "/.prodready/lib"

let strictSwift: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

/// What every production-readiness suite links: the shared test library and the clients it acts through.
let suiteDependencies: [Target.Dependency] = [
    "TestSupport", "ProdReadyCore", "ProdReadyInfra", "ProdReadyPostgres", "ProdReadyReliability", "ProdReadyKafka", "ProdReadyNATS", "ProdReadyRedis", "ProdReadyS3",
    .product(name: "PostgresNIO", package: "postgres-nio"),
    .product(name: "Logging", package: "swift-log"),
]

let package = Package(
    name: "ProdReady",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "prodready", targets: ["prodready"]),
        .library(name: "ProdReadyInfra", targets: ["ProdReadyInfra"]),
        .library(name: "TestSupport", targets: ["TestSupport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.25.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.25.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.3.0"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.7.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
    ],
    targets: [
        // C libraries from Debian packages (installed by scripts/bootstrap).
        .systemLibrary(name: "CRdKafka", path: "Sources/CRdKafka"),
        .systemLibrary(name: "CNats", path: "Sources/CNats"),
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis"),

        // glibc extensions the Swift Glibc module does not import.
        .target(name: "CProdReadyShims", path: "Sources/CProdReadyShims"),
        .target(
            name: "ProdReadyCore",
            swiftSettings: strictSwift
        ),
        .target(
            name: "ProdReadyKafka",
            dependencies: ["CRdKafka", "ProdReadyCore"],
            swiftSettings: strictSwift,
            linkerSettings: [.unsafeFlags(["-Xlinker", "-rpath", "-Xlinker", bundledLibraryDirectory])]
        ),
        .target(
            name: "ProdReadyNATS",
            dependencies: ["CNats", "ProdReadyCore"],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ProdReadyRedis",
            dependencies: ["CHiredis", "ProdReadyCore"],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ProdReadyHTTP",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ProdReadyS3",
            dependencies: [
                "ProdReadyCore", "ProdReadyHTTP",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSwift
        ),
        // Percentile measurements with thresholds, shared by the suites and the benchmark commands.
        .target(
            name: "ProdReadyPerformance",
            dependencies: ["ProdReadyCore", .product(name: "Histogram", package: "hdrhistogram-swift")],
            swiftSettings: strictSwift
        ),
        // Loss accounting (SPEC-services "Loss accounting"): what was acknowledged against what arrived. The CLI
        // links it as well as TestSupport, so it must not depend on Swift Testing.
        .target(
            name: "ProdReadyVerification",
            swiftSettings: strictSwift
        ),
        .target(
            name: "ProdReadyPostgres",
            dependencies: [
                "ProdReadyCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSwift
        ),
        // Processed-event registry, sequence allocator, transactional outbox, circuit breaker (SPEC-reliability).
        .target(
            name: "ProdReadyReliability",
            dependencies: [
                "ProdReadyCore", "ProdReadyPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        // Outbox sinks: the relay of ProdReadyReliability publishing through the broker clients.
        .target(
            name: "ProdReadySinks",
            dependencies: ["ProdReadyCore", "ProdReadyReliability", "ProdReadyRedis", "ProdReadyNATS", "ProdReadyKafka"],
            swiftSettings: strictSwift
        ),
        // What every reference service shares (SPEC-services): the HTTP edge (request ids, JSON errors, 404/405/413),
        // JWT roles, health and readiness, Prometheus metrics, the OpenAPI document, configuration errors, crash points.
        .target(
            name: "ProdReadyService",
            dependencies: [
                "ProdReadyCore", "ProdReadyHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        // The OMS's wire contract: the event record in its S3 store and on Kafka, shared with every reader of it.
        .target(
            name: "OMSContract",
            dependencies: ["ProdReadyCore", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strictSwift
        ),
        // The audit event's wire contract (SPEC-audit): the record producers put in their outbox and the audit
        // service stores, and where it goes on NATS.
        .target(
            name: "AuditContract",
            dependencies: ["ProdReadyCore", "ProdReadyReliability", "ProdReadyNATS"],
            swiftSettings: strictSwift
        ),
        // The OMS reference service (SPEC-oms): event store, publisher, workers, HTTP API, audit outbox and relay.
        .target(
            name: "OMSService",
            dependencies: [
                "OMSContract", "AuditContract", "ProdReadyService", "ProdReadyCore", "ProdReadyPostgres", "ProdReadyReliability", "ProdReadyS3",
                "ProdReadyKafka", "ProdReadyRedis", "ProdReadyNATS", "ProdReadySinks",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        // The audit reference service (SPEC-audit): the `audit` process's JetStream consumer, store, API and housekeeping.
        .target(
            name: "AuditService",
            dependencies: [
                "AuditContract", "ProdReadyService", "ProdReadyCore", "ProdReadyPostgres", "ProdReadyReliability", "ProdReadyNATS",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift
        ),
        // Chaos runs, shared by the suites and `prodready chaos`: fault schedules drawn from a seed, the fault
        // injector over a ChaosControl, a bounded load generator, scenario reports. No Swift Testing.
        .target(
            name: "ProdReadyChaos",
            dependencies: ["ProdReadyCore", "ProdReadyInfra", "ProdReadyVerification"],
            swiftSettings: strictSwift
        ),
        // The OMS's chaos scenarios (SPEC-oms items 3, 4 and 6) and its convergence check, over HTTP and its stores.
        .target(
            name: "OMSChaos",
            dependencies: [
                "ProdReadyChaos", "OMSContract", "ProdReadyCore", "ProdReadyInfra", "ProdReadyService", "ProdReadyVerification", "ProdReadyPostgres",
                "ProdReadyRedis", "ProdReadyS3", "ProdReadyKafka",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "ProdReadyInfra",
            dependencies: [
                "ProdReadyCore", "ProdReadyPostgres", "ProdReadyKafka", "ProdReadyNATS", "ProdReadyRedis", "ProdReadyS3", "CProdReadyShims", "ProdReadyHTTP",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "prodready",
            dependencies: [
                "ProdReadyInfra", "ProdReadyReliability", "ProdReadyPostgres", "ProdReadyPerformance", "ProdReadyKafka", "ProdReadyService", "OMSService", "AuditService", "AuditContract",
                "ProdReadyChaos", "OMSChaos", "ProdReadyVerification", "ProdReadyRedis", "ProdReadyS3",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "TestSupport",
            dependencies: [
                "ProdReadyInfra", "ProdReadyCore", "ProdReadyPostgres", "ProdReadyReliability", "ProdReadyPerformance", "ProdReadyKafka", "ProdReadyNATS", "ProdReadyRedis", "ProdReadyS3",
                "ProdReadyVerification", "ProdReadyService", "ProdReadyChaos", "OMSChaos", "AuditContract",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "TestSupport",
            swiftSettings: strictSwift
        ),

        // Pure logic, no servers: fast, always runs.
        .testTarget(
            name: "UnitTests",
            dependencies: [
                "TestSupport", "ProdReadyS3", "ProdReadyInfra", "ProdReadyRedis", "ProdReadyCore", "ProdReadyPostgres", "ProdReadyReliability",
                "ProdReadyVerification", "ProdReadyService", "OMSContract", "AuditContract", "AuditService", "OMSService",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSwift
        ),
        // TestSupport against real servers.
        .testTarget(
            name: "TestSupportTests",
            dependencies: [
                "TestSupport", "prodready", "ProdReadyCore", "ProdReadyInfra", "ProdReadyKafka", "ProdReadyNATS", "ProdReadyRedis", "ProdReadyS3", "ProdReadyService",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        // The messaging and storage clients against real servers.
        .testTarget(
            name: "ClientTests",
            dependencies: [
                // The consumer-group test runs `prodready kafka consume` members as child processes to kill one.
                "prodready", "TestSupport", "ProdReadyCore", "ProdReadyInfra", "ProdReadyS3", "ProdReadyRedis", "ProdReadyKafka", "ProdReadyNATS",
                "ProdReadyReliability", "ProdReadySinks", "ProdReadyPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strictSwift
        ),
        // The five production-readiness suites.
        // The OMS suite starts `prodready outbox relay` as a child process to kill it.
        .testTarget(name: "OMSSmokeTests", dependencies: suiteDependencies + ["prodready", "OMSContract", "OMSService", "ProdReadyService", "OMSChaos", "ProdReadyChaos"], swiftSettings: strictSwift),
        .testTarget(name: "MSAAuditFlowTests", dependencies: suiteDependencies + ["OMSService", "AuditContract", "ProdReadyService"], swiftSettings: strictSwift),
        .testTarget(name: "DurabilityTests", dependencies: suiteDependencies, swiftSettings: strictSwift),
        .testTarget(name: "JobPipelineTests", dependencies: suiteDependencies, swiftSettings: strictSwift),
        .testTarget(name: "EventBusE2ETests", dependencies: suiteDependencies, swiftSettings: strictSwift),
    ],
    swiftLanguageModes: [.v6]
)
