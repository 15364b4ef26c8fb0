import Foundation
import OMSContract
import ProdReadyCore
import ProdReadyKafka

/// Where a lost command is on the commands topic, for the report: on the topic at an offset the instance
/// worker's group already committed past (the broker handed it out under an offset the group had passed, or the
/// worker skipped it), on the topic ahead of the group (still to be read), or not on the topic at all (never
/// published, or lost by the broker).
enum OMSKafkaTrace {
    static func locate(command: String, target: OMSChaosTarget, timeout: Duration = .seconds(15)) async throws -> String {
        let configuration = KafkaConfiguration.embedded(bootstrapServers: target.kafkaServers, clientID: "oms-chaos-trace")
        let admin = try KafkaAdmin(configuration: configuration)
        let positions = try await admin.consumerGroupLag(group: target.instanceWorkerGroup, topic: target.commandsTopic)
        let reader = try KafkaConsumer(configuration: configuration, groupID: "oms-chaos-trace-\(UInt32.random(in: 0...UInt32.max))")
        defer { Task { try? await reader.close() } }
        try await reader.assign(Dictionary(uniqueKeysWithValues: positions.map { ($0.partition, KafkaOffset.beginning) }))
        var remaining = Dictionary(uniqueKeysWithValues: positions.filter { $0.watermarks.high > $0.watermarks.low }.map { ($0.partition.partition, $0.watermarks.high) })
        var found: [(partition: Int32, offset: Int64)] = []
        var read = 0
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while !remaining.isEmpty, clock.now < deadline {
            for message in try await reader.poll(upTo: 500, timeout: .milliseconds(200)) {
                read += 1
                if (try? OMSEvent.decode(message.value).eventID) == command { found.append((message.partition, message.offset)) }
                if let high = remaining[message.partition], message.offset + 1 >= high { remaining[message.partition] = nil }
            }
        }
        let group = positions.map { "p\($0.partition.partition) committed \($0.committed.map(String.init) ?? "none") of \($0.watermarks.low)..<\($0.watermarks.high)" }.joined(separator: ", ")
        guard !found.isEmpty else {
            return "not on \(target.commandsTopic) (\(read) messages read\(remaining.isEmpty ? "" : ", some partitions not read to the end")); group \(group)"
        }
        return found.map { place in
            let committed = positions.first { $0.partition.partition == place.partition }?.committed
            let passed = committed.map { $0 > place.offset } ?? false
            return "on \(target.commandsTopic) p\(place.partition) offset \(place.offset), \(passed ? "BEHIND" : "ahead of") the group's committed offset"
        }.joined(separator: "; ") + "; group \(group)"
    }
}
