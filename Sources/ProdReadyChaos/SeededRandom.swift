import Foundation

/// A deterministic random source for chaos and soak runs (SplitMix64). The seed comes from
/// `PRODREADY_SEED` when set, so a failing run can be replayed exactly; otherwise it is random and printed.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    public let seed: UInt64
    private var state: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        state = seed
    }

    /// Seed from `PRODREADY_SEED`, else random; prints the seed with how to replay it.
    public static func fromEnvironment(label: String, environment: [String: String]? = nil) -> SeededRandom {
        let environment = environment ?? ProcessInfo.processInfo.environment
        let seed = environment["PRODREADY_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 0...UInt64.max)
        print("🎲 \(label): seed \(seed) (replay with PRODREADY_SEED=\(seed))")
        return SeededRandom(seed: seed)
    }

    /// A value drawn from `range` (inclusive), the same for the same seed on every platform.
    public mutating func int(in range: ClosedRange<Int>) -> Int {
        let width = UInt64(range.upperBound - range.lowerBound) + 1
        return range.lowerBound + Int(next() % width)
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var value = state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}
