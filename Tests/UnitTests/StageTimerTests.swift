import Testing
import ProdReadyCore

/// The step timings a worker logs with a backlog it worked off.
@Suite("Stage timer: what a worker's backlog notice says about where the time went")
struct StageTimerTests {
    struct Refused: Error {}

    @Test("each step is counted, a step that throws too, in name order; reset forgets everything")
    func countsAndResets() async throws {
        let timer = StageTimer()
        #expect(timer.summary() == "")
        let first = await timer.time("claim") { 1 }
        let second = await timer.time("claim") { 2 }
        #expect(first + second == 3)
        await #expect(throws: Refused.self) { try await timer.time("append") { throw Refused() } }
        let fields = timer.summary().split(separator: " ", omittingEmptySubsequences: true)
        // "append=1x/0ms/max 0ms claim=2x/0ms/max 0ms": four pieces, the steps sorted by name.
        #expect(fields.count == 4, "\(timer.summary())")
        #expect(fields.first?.hasPrefix("append=1x/") == true, "\(timer.summary())")
        #expect(fields.dropFirst(2).first?.hasPrefix("claim=2x/") == true, "\(timer.summary())")
        timer.reset()
        #expect(timer.summary() == "")
    }

    @Test("the total is the sum of the runs and the longest is the longest run, in milliseconds")
    func sumsDurations() async throws {
        let timer = StageTimer()
        let clock = ContinuousClock()
        // Busy-wait rather than sleep: the step must take at least this long, measured on the same clock.
        for milliseconds in [30, 10] {
            await timer.time("apply") {
                let until = clock.now + .milliseconds(milliseconds)
                while clock.now < until {}
            }
        }
        let summary = timer.summary()
        let numbers = summary.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        // apply=2x/<total>ms/max <longest>ms
        #expect(numbers.count == 3, "\(summary)")
        guard numbers.count == 3 else { return }
        #expect(numbers[0] == 2)
        #expect(numbers[1] >= 40, "total \(numbers[1]) ms for 30 + 10 ms")
        #expect(numbers[2] >= 30 && numbers[2] <= numbers[1], "longest \(numbers[2]) ms of \(numbers[1]) ms")
    }
}
