import ProdReadyKafka
import ProdReadyInfra

/// Runs `body` with a fresh, uniquely named topic of `partitions` partitions, deleted afterwards on a real Kafka.
///
/// On the embedded broker the topic stays (it goes with the stack's data): deleting a topic there while
/// librdkafka 2.16 clients in the same process still know it crashes the process (a segfault in librdkafka's
/// metadata cache; Tansu 0.6 then reports the deleted topic with another partition count). Reproduced with the
/// Python client alone: create, produce, delete, keep polling. Unique names keep tests apart regardless.
public func withKafkaTopic<Result: Sendable>(
    _ bootstrapServers: String,
    partitions: Int = 1,
    _ body: (_ topic: String) async throws -> Result
) async throws -> Result {
    let admin = try KafkaAdmin(configuration: .embedded(bootstrapServers: bootstrapServers, clientID: "prodready-tests"))
    let topic = uniqueName("t")
    // Setting up is not what a test measures: on a loaded machine the embedded broker, whose log lives in S3,
    // took longer than the admin default of 10 s to create a topic.
    try await admin.createTopic(topic, partitions: partitions, timeout: .seconds(30))
    guard try await kafkaTopicsMayBeDeleted() else { return try await body(topic) }
    return try await runThenCleanUp({ try await body(topic) }, cleanUp: { try await admin.deleteTopic(topic) })
}

/// Whether the shared Kafka is a real Kafka (compose, an external deployment) rather than the embedded broker.
public func kafkaTopicsMayBeDeleted() async throws -> Bool {
    try await TestInfrastructure.shared.source(for: [.kafka]).kind != .native
}
