import ProdReadyCore

/// Where stacks live under the ProdReady home directory.
public enum StackLocations {
    /// The stack `prodready up` starts and `prodready down` removes.
    public static func upStack(home: String) -> String { home + "/stack" }
    /// Stacks owned by one process (a test run, a private stack per test, a benchmark).
    public static func ownedStacks(home: String) -> String { home + "/stacks" }

    /// A fresh directory for a stack owned by this process.
    public static func newOwnedStack(home: String, label: String) -> String {
        let random = String(UInt32.random(in: 0...UInt32.max), radix: 16).leftPadded(to: 8)
        return "\(ownedStacks(home: home))/\(label)-\(getpidValue())-\(random)"
    }

    /// The `prodready up` stack if its state file exists and at least one of its processes is alive.
    public static func attachUpStack(home: String) async -> NativeStack? {
        let directory = upStack(home: home)
        guard fileExists(directory + "/state.json"), let stack = try? NativeStack(attachingTo: directory, home: home) else { return nil }
        let alive = await stack.processes.contains(where: \.isAlive)
        return alive ? stack : nil
    }
}
