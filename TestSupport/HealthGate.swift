public import ProdReadyInfra

/// One health probe at a time per component and address, shared by every guard that asks while it runs.
///
/// Swift Testing starts every test of a run (about 150) at once, and each guard probes the components its test
/// needs. On a loaded CI machine dozens of simultaneous Kafka probes (a producer and a consumer each, with
/// librdkafka's threads) and S3 probes were themselves the load that made the shared broker and the S3 server (moto then) miss the probe deadline, so
/// the guards failed tests against servers that were up. Guards that ask while a probe is in flight now wait
/// for its answer instead of starting another. Nothing is cached after the probe ends: a guard that asks later
/// probes again, so a component stopped by a chaos test is seen as stopped.
public actor HealthGate {
    public static let shared = HealthGate()

    struct Key: Hashable {
        var kind: ProviderKind
        var component: Component
        var address: String
    }

    private var inFlight: [Key: Task<ComponentHealth, Never>] = [:]
    /// How many probes ran, and how many callers joined one already running (for the gate's own test).
    public private(set) var probesStarted = 0
    public private(set) var callersJoined = 0

    public init() {}

    /// The health of `component` in `source`: the running probe's answer if one is in flight, else a new probe's.
    public func health(of component: Component, in source: any Infrastructure) async -> ComponentHealth {
        let key = Key(kind: source.kind, component: component, address: await source.endpoints().address(of: component) ?? "")
        if let running = inFlight[key] {
            callersJoined += 1
            return await running.value
        }
        probesStarted += 1
        let probe = Task { await source.health(component) }
        inFlight[key] = probe
        let health = await probe.value
        inFlight[key] = nil
        return health
    }
}

extension StackEndpoints {
    /// Where `component` is reached, or nil when it is not part of these endpoints.
    func address(of component: Component) -> String? {
        switch component {
        case .postgres: postgresURL
        case .kafka: kafkaBootstrapServers
        case .nats: natsURL
        case .redis: redisURL
        case .s3: s3?.url
        }
    }
}
