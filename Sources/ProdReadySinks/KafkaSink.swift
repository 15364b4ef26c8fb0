public import ProdReadyCore
public import ProdReadyKafka
public import ProdReadyReliability

/// An outbox sink that produces each event to Kafka with the aggregate id as the key (the event id when there is
/// none), so one aggregate's events share a partition and keep their order. Headers carry `event_id`,
/// `event_type` and, when set, `correlation_id`.
///
/// Delivery is at least once: the idempotent producer removes duplicates of its own retries, but a row published
/// again by the relay (after a lost outcome or a relay crash) is a second record. Consumers deduplicate by event
/// id with the processed-event registry.
public struct KafkaSink: OutboxSink {
    public let producer: KafkaProducer
    /// The topic an event goes to: by default the outbox row's subject.
    private let topic: @Sendable (OutboxRecord) -> String?

    public init(producer: KafkaProducer, topic: @escaping @Sendable (OutboxRecord) -> String? = { $0.subject }) {
        self.producer = producer
        self.topic = topic
    }

    public func publish(_ records: [OutboxRecord]) async throws -> [Result<Void, ProdReadyError>] {
        try await publishRows(records) { record in
            guard let topic = topic(record), !topic.isEmpty else {
                return .failure(ProdReadyError(.invalidArgument, "outbox row \(record.id) (event \(record.eventID)) names no Kafka topic: set its subject"))
            }
            var headers = [KafkaHeader("event_id", record.eventID), KafkaHeader("event_type", record.eventType)]
            if let correlationID = record.correlationID { headers.append(KafkaHeader("correlation_id", correlationID)) }
            return .success(KafkaOutgoing(topic: topic, key: Array((record.aggregateID ?? record.eventID).utf8), value: record.eventData, headers: headers))
        } send: { messages in
            // Each message fails alone (a malformed topic is refused before sending), so one row never fails its batch.
            try await producer.send(batch: messages).map { $0.map { _ in () } }
        }
    }
}
