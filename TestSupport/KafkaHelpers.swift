import ProdReadyKafka

/// Runs `body` with a fresh topic of `partitions` partitions, deleted afterwards.
public func withKafkaTopic<Result: Sendable>(
    _ bootstrapServers: String,
    partitions: Int = 1,
    _ body: (_ topic: String) async throws -> Result
) async throws -> Result {
    let admin = try KafkaAdmin(configuration: .embedded(bootstrapServers: bootstrapServers, clientID: "prodready-tests"))
    let topic = uniqueName("t")
    try await admin.createTopic(topic, partitions: partitions)
    return try await runThenCleanUp({ try await body(topic) }, cleanUp: { try await admin.deleteTopic(topic) })
}
