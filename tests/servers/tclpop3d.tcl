#!/usr/bin/env tclsh
# Minimal POP3 server built from tcllib's pop3d (Debian package tcllib):
#   ::pop3d::new           the protocol engine
#   ::pop3d::udb           user database  (-auth callback: "lookup user")
#   ::pop3d::dbox          directory-per-mailbox store (-storage callback)
# Usage: tclsh tclpop3d.tcl BASEDIR PORT USER PASS  (run by tests/servers/tclpop3d.py)
#   serves BASEDIR/USER/* (one file per message, sorted by name) on
#   127.0.0.1:PORT.
# Stock tcllib 1.21 behaviour is kept on purpose (this is an interop peer):
#   mime 1.7.0's buildmessage already returns CRLF text and pop3d writes it
#   to a "-translation crlf" socket, so every line goes out as CR CR LF.
#   Set TCLPOP3D_FIX_CRLF=1 to wrap mime::buildmessage so that pop3d gets LF
#   text and the wire carries plain CRLF (the only change this script can
#   make; header rewriting and TOP ignoring its line count remain).
package require Tcl 8.6
package require log
package require pop3d
package require pop3d::udb
package require pop3d::dbox

lassign $argv base port user pass
if {$pass eq ""} {
    puts stderr "usage: tclsh tclpop3d.tcl BASEDIR PORT USER PASS"
    exit 2
}

::log::lvSuppressLE info 0   ;# log notice+info (logins, state changes)
::log::lvSuppress debug 1

if {[info exists ::env(TCLPOP3D_FIX_CRLF)] && $::env(TCLPOP3D_FIX_CRLF) eq "1"} {
    rename ::mime::buildmessage ::mime::buildmessage_stock
    proc ::mime::buildmessage {token} {
        string map [list "\r\n" "\n"] [::mime::buildmessage_stock $token]
    }
    puts stderr "TCLPOP3D_FIX_CRLF=1: mime::buildmessage output converted to LF"
}

set udb [::pop3d::udb::new]
$udb add $user $pass $user       ;# user, password, storage (= mailbox dir name)

set box [::pop3d::dbox::new]
$box base $base
if {![$box exists $user]} { $box add $user }

set srv [::pop3d::new]
$srv configure -auth $udb -storage $box -port $port \
    -socket [list socket -myaddr 127.0.0.1]
$srv up
puts stderr "tcllib pop3d [package present pop3d] listening on 127.0.0.1:[$srv cget -port] for $user ($base/$user)"
vwait forever
