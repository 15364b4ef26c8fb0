import ProdReadyCore
import ProdReadyReliability

/// What every sink does with a batch: turn each row into a broker message (or fail that row alone), send the
/// messages in one go, and give back one outcome per row in row order.
func publishRows<Message>(
    _ records: [OutboxRecord],
    message: (OutboxRecord) -> Result<Message, ProdReadyError>,
    send: ([Message]) async throws -> [Result<Void, ProdReadyError>]
) async throws -> [Result<Void, ProdReadyError>] {
    var outcomes = [Result<Void, ProdReadyError>?](repeating: nil, count: records.count)
    var messages: [Message] = []
    var positions: [Int] = []
    for (index, record) in records.enumerated() {
        switch message(record) {
        case .success(let built):
            messages.append(built)
            positions.append(index)
        case .failure(let error):
            outcomes[index] = .failure(error)
        }
    }
    if !messages.isEmpty {
        for (position, outcome) in zip(positions, try await send(messages)) { outcomes[position] = outcome }
    }
    return outcomes.map { $0 ?? .failure(ProdReadyError(.protocolError, "the broker gave no outcome for this row")) }
}
