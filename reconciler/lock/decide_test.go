package lock

import (
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	const me = "openbaorestore/r1/uid-1"
	const other = "openbaorestore/r2/uid-2"
	free := ClusterLock{}
	mine := ClusterLock{Operation: "Restore", Holder: me}
	otherRestore := ClusterLock{Operation: "Restore", Holder: other}
	backup := ClusterLock{Operation: "Backup", Holder: "openbaobackup/nightly"}
	upgrade := ClusterLock{Operation: "Upgrade", Holder: "openbaoupgrade/u1"}
	strange := ClusterLock{Operation: "Rekey", Holder: "someone"}
	holderOnly := ClusterLock{Holder: "someone"}
	// Our holder string under another operation is not ours.
	mineAsBackup := ClusterLock{Operation: "Backup", Holder: me}

	cases := []struct {
		name     string
		lock     ClusterLock
		req      Request
		want     Action
		blocked  bool
		contains string
	}{
		{"free lock is acquired", free, Request{Holder: me}, Acquire, false, ""},
		{"free lock is acquired with override too", free, Request{Holder: me, Override: true}, Acquire, false, ""},
		{"free lock goes to the first in line", free, Request{Holder: me, Ahead: "r0"}, Wait, false, "behind r0"},
		{"first in line does not matter for a held lock", mine, Request{Holder: me, Ahead: "r0"}, Keep, false, ""},
		{"deleting while queued forgets", free, Request{Holder: me, Ahead: "r0", Deleting: true}, Forget, false, ""},
		{"override waits in line for a free lock", free, Request{Holder: me, Override: true, Ahead: "r0"}, Wait, false, "behind r0"},
		{"own lock is kept", mine, Request{Holder: me}, Keep, false, ""},
		{"own lock is kept with override", mine, Request{Holder: me, Override: true}, Keep, false, ""},
		{"another restore makes it wait", otherRestore, Request{Holder: me}, Wait, false, "holder=" + other},
		{"override never clears another restore", otherRestore, Request{Holder: me, Override: true}, Wait, false, "operation=Restore"},
		{"backup blocks", backup, Request{Holder: me}, Wait, true, "held by operation=Backup holder=openbaobackup/nightly"},
		{"upgrade blocks", upgrade, Request{Holder: me}, Wait, true, "operation=Upgrade"},
		{"override clears backup", backup, Request{Holder: me, Override: true}, Override, false, "openbaobackup/nightly"},
		{"override clears upgrade", upgrade, Request{Holder: me, Override: true}, Override, false, "openbaoupgrade/u1"},
		{"unknown operation is never overridden", strange, Request{Holder: me, Override: true}, Wait, true, "operation=Rekey"},
		{"a holder without operation is not free", holderOnly, Request{Holder: me, Override: true}, Wait, true, "holder=someone"},
		{"our holder under Backup is not ours", mineAsBackup, Request{Holder: me}, Wait, true, "operation=Backup"},
		{"deleting while holding releases", mine, Request{Holder: me, Deleting: true}, Release, false, ""},
		{"deleting while waiting forgets", otherRestore, Request{Holder: me, Deleting: true}, Forget, false, ""},
		{"deleting never releases a backup", backup, Request{Holder: me, Deleting: true, Override: true}, Forget, false, ""},
		{"deleting with free lock forgets", free, Request{Holder: me, Deleting: true}, Forget, false, ""},
		{"deleting never releases our holder under Backup", mineAsBackup, Request{Holder: me, Deleting: true}, Forget, false, ""},
		{"ended while holding finishes", mine, Request{Holder: me, Ended: true}, Finish, false, "the restore ended"},
		{"ended with override while holding finishes", mine, Request{Holder: me, Ended: true, Override: true}, Finish, false, ""},
		{"ended and deleting releases", mine, Request{Holder: me, Ended: true, Deleting: true}, Release, false, ""},
		{"ended with a free lock retires, never acquires", free, Request{Holder: me, Ended: true}, Retire, false, "without holding"},
		{"ended first in line retires", free, Request{Holder: me, Ended: true, Ahead: "r0"}, Retire, false, ""},
		{"ended behind another restore retires", otherRestore, Request{Holder: me, Ended: true}, Retire, false, ""},
		{"ended never overrides a backup", backup, Request{Holder: me, Ended: true, Override: true}, Retire, false, ""},
		{"ended never releases our holder under Backup", mineAsBackup, Request{Holder: me, Ended: true}, Retire, false, ""},
		{"ended and deleting without the lock forgets", free, Request{Holder: me, Ended: true, Deleting: true}, Forget, false, ""},
		// A writer that does not compare-and-swap replaced or cleared a
		// lock this request held.
		{"a held lock replaced by a backup is reported taken", backup, Request{Holder: me, Held: true}, Wait, true, "took the operation lock of cluster c1 from this restore"},
		{"a held lock replaced by an unknown operation is reported taken", strange, Request{Holder: me, Held: true, Override: true}, Wait, true, "operation=Rekey holder=someone took"},
		{"once reported taken it waits for the backup", backup, Request{Holder: me, Taken: true}, Wait, true, "held by operation=Backup"},
		{"once reported taken override clears the backup", backup, Request{Holder: me, Taken: true, Override: true}, Override, false, "openbaobackup/nightly"},
		{"a cleared held lock is taken back at once", free, Request{Holder: me, Held: true, Ahead: "r0"}, Acquire, false, "taking back"},
		{"a freed taken lock is taken back ahead of the line", free, Request{Holder: me, Taken: true, Ahead: "r0"}, Acquire, false, "taking back"},
		{"held and ours is kept", mine, Request{Holder: me, Held: true}, Keep, false, ""},
		{"taken then ended never takes it back", free, Request{Holder: me, Taken: true, Ended: true}, Retire, false, ""},
		{"taken then deleting forgets", backup, Request{Holder: me, Taken: true, Deleting: true}, Forget, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide("c1", c.lock, c.req)
			if d.Action != c.want || d.Blocked != c.blocked {
				t.Fatalf("Decide = %v blocked=%v (%q), want %v blocked=%v", d.Action, d.Blocked, d.Message, c.want, c.blocked)
			}
			if want := c.req.Held && d.Action == Wait; d.Taken != want {
				t.Fatalf("Decide.Taken = %v, want %v", d.Taken, want)
			}
			if want := (c.req.Held || c.req.Taken) && (d.Action == Acquire || d.Action == Override); d.Retake != want {
				t.Fatalf("Decide.Retake = %v, want %v", d.Retake, want)
			}
			if !strings.Contains(d.Message, c.contains) || d.Message == "" {
				t.Fatalf("message %q does not contain %q", d.Message, c.contains)
			}
		})
	}
}

// Applying decisions in any order from any state never yields two holders:
// the only transitions that write the lock are from free (Acquire), from a
// foreign Backup/Upgrade (Override) and from our own lock (Release,
// Finish); a restore that ended never takes the lock, whatever its status
// says it held.
func TestDecideWritesOnlyFromSafeStates(t *testing.T) {
	locks := []ClusterLock{{}, {Operation: "Restore", Holder: "a"}, {Operation: "Restore", Holder: "b"},
		{Operation: "Backup", Holder: "x"}, {Operation: "Upgrade", Holder: "y"}, {Operation: "Other", Holder: "z"}}
	for _, l := range locks {
		for _, holder := range []string{"a", "b"} {
			for _, override := range []bool{false, true} {
				for _, deleting := range []bool{false, true} {
					for _, ended := range []bool{false, true} {
						for _, held := range []bool{false, true} {
							for _, taken := range []bool{false, true} {
								d := Decide("c", l, Request{Holder: holder, Override: override, Deleting: deleting, Ended: ended, Held: held, Taken: taken})
								switch d.Action {
								case Acquire:
									if !l.Free() || ended {
										t.Errorf("Acquire from %+v ended=%v", l, ended)
									}
								case Override:
									if l.Operation != "Backup" && l.Operation != "Upgrade" || !override || deleting || ended {
										t.Errorf("Override from %+v override=%v deleting=%v ended=%v", l, override, deleting, ended)
									}
								case Release, Finish:
									if l.Holder != holder || l.Operation != "Restore" {
										t.Errorf("%v of %+v by %s", d.Action, l, holder)
									}
								}
							}
						}
					}
				}
			}
		}
	}
}
