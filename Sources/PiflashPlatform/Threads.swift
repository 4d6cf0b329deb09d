#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization

/// A bounded, closable queue of `Sendable` values between threads: the stages of a
/// ``RingPipeline`` pass their chunk tokens through these, so no stage ever holds more than the
/// ring's buffers. Checked `Sendable`: its state sits in a `Mutex`, waiting is on two counting
/// semaphores (free places, waiting elements).
public final class Channel<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var closed = false
    }

    private let state = Mutex(State())
    /// Counts free places (senders wait on it).
    private let places: DispatchSemaphore
    /// Counts waiting elements, plus one wake-up after closing (receivers wait on it).
    private let waiting = DispatchSemaphore(value: 0)

    /// - Parameter capacity: how many elements may wait at once.
    public init(capacity: Int) {
        precondition(capacity > 0)
        // Created at 0 and raised: libdispatch traps when a semaphore is released below the value
        // it was created with, which a full channel would be.
        places = DispatchSemaphore(value: 0)
        for _ in 0..<capacity { places.signal() }
    }

    /// Adds an element, waiting while the queue is full.
    /// - Returns: false when the channel was closed (the element is dropped).
    @discardableResult
    public func send(_ element: Element) -> Bool {
        places.wait()
        let added = state.withLock { state -> Bool in
            if state.closed { return false }
            state.items.append(element)
            return true
        }
        if added {
            waiting.signal()
        } else {
            // Pass the wake-up on to the next sender blocked on a closed channel.
            places.signal()
        }
        return added
    }

    /// Takes the oldest element, waiting while the queue is empty.
    /// - Returns: nil once the channel is closed and drained.
    public func receive() -> Element? {
        waiting.wait()
        let element = state.withLock { state -> Element? in
            state.items.isEmpty ? nil : state.items.removeFirst()
        }
        if element != nil {
            places.signal()
        } else {
            // Closed and drained: pass the wake-up on to the next receiver.
            waiting.signal()
        }
        return element
    }

    /// Ends the channel: senders stop, receivers drain what is left and then get nil.
    public func close() {
        let first = state.withLock { state -> Bool in
            defer { state.closed = true }
            return !state.closed
        }
        guard first else { return }
        waiting.signal()
        places.signal()
    }
}

/// A dedicated OS thread for blocking work (O_DIRECT I/O, decompression, libext2fs), kept off the
/// Swift concurrency pool. ``join()`` waits for it. The body is `sending`: what it captures (a
/// decompressor, a hasher) moves to the thread, and the compiler checks nothing else touches it.
public final class WorkerThread: Sendable {
    private let thread: pthread_t

    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Starts `body` on a new thread.
    public init(_ body: sending @escaping () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        self.thread = thread
    }

    /// Waits until the thread has finished. Call it once.
    public func join() {
        pthread_join(thread, nil)
    }
}

/// A value shared between threads behind a lock. Checked `Sendable`: the value lives in a
/// `Mutex`, enters it as `sending` and is reached only inside ``withLock(_:)``.
public final class Locked<Value>: Sendable {
    private let mutex: Mutex<Value>

    public init(_ value: sending Value) {
        mutex = Mutex(value)
    }

    /// Runs `body` with exclusive access to the value.
    public func withLock<T>(_ body: (inout sending Value) throws -> sending T) rethrows -> sending T {
        try mutex.withLock(body)
    }
}

/// A database connection (``SQLiteDatabase``, ``PostgreSQLConnection``) shared by the threads of a
/// process and used by one at a time. Not a general box: a connection is a non-`Sendable` object
/// whose statements callers run inside ``withLock(_:)`` with their own (non-`Sendable`) closures,
/// which Swift cannot prove race-free — the lock does. The connection must never escape the closure.
public final class ConnectionLock<Connection: AnyObject>: @unchecked Sendable {
    private let mutex = Mutex<Void>(())
    private let connection: Connection

    public init(_ connection: Connection) {
        self.connection = connection
    }

    /// Runs `body` with the connection, holding the lock.
    public func withLock<T>(_ body: (Connection) throws -> T) rethrows -> T {
        try mutex.withLock { _ in try body(connection) }
    }
}
