#!/usr/bin/perl
# h2m-fixup: touches up a page that help2man made from a program's --help, in place.
#
#   perl h2m-fixup.pl PAGE
#
# - help2man makes a SYNOPSIS only from a line starting "Usage:" (capital U). When the --help
#   text starts "usage: prog ...", that line is moved from DESCRIPTION into a SYNOPSIS.
# - A command list in --help ("  name ARGS" with its summary on the next line, indented) comes
#   out as two separate paragraphs; each pair becomes one tagged paragraph: the command in bold,
#   the summary under it.
use strict;
use warnings;

die "usage: h2m-fixup.pl PAGE\n" unless @ARGV == 1;
my $page = $ARGV[0];
open(my $fh, '<', $page) or die "h2m-fixup: $page: $!\n";
my @l = <$fh>;
close $fh;
chomp @l;

if (!grep { /^\.SH SYNOPSIS/ } @l) {
    my ($desc) = grep { $l[$_] =~ /^\.SH DESCRIPTION/ } 0 .. $#l;
    if (defined $desc) {
        for my $i ($desc + 1 .. $#l) {
            last if $l[$i] =~ /^\.SH /;
            next unless $l[$i] =~ /^usage: (\S+)\s*(.*)$/i;
            my @syn = ('.SH SYNOPSIS', ".B $1", $2);
            splice(@l, $i, 1);
            splice(@l, $desc, 0, @syn);
            last;
        }
    }
}

my @o;
for (my $i = 0; $i < @l; $i++) {
    # .IP / command line / .IP / summary line, where the command line is not an option
    if ($l[$i] eq '.IP' && $i + 3 < @l && $l[$i + 2] eq '.IP' && $l[$i + 1] =~ /^[a-z][a-z\\-]*(\s|$)/
        && $l[$i + 3] !~ /^\./) {
        my ($cmd, $args) = $l[$i + 1] =~ /^(\S+)\s*(.*)$/;
        push @o, '.TP', $args eq '' ? "\\fB$cmd\\fR" : "\\fB$cmd\\fR $args", $l[$i + 3];
        $i += 3;
        next;
    }
    push @o, $l[$i];
}

open(my $oh, '>', "$page.tmp") or die "h2m-fixup: $page.tmp: $!\n";
print $oh join("\n", @o), "\n";
close $oh or die "h2m-fixup: $page.tmp: $!\n";
rename("$page.tmp", $page) or die "h2m-fixup: $page: $!\n";
