#!/usr/bin/perl
# yaml2man: turns conf/wsq.yaml (every key, its default, and the comments that document it) into
# the man page wsq.yaml(5), so that the page cannot drift from the file wsqd embeds as its default.
#
#   perl yaml2man.pl [--version VERSION] conf/wsq.yaml wsq.yaml.5
#
# What it understands in conf/wsq.yaml (the conventions that file follows):
#   - A comment block right above a key documents that key; a top-level key starts a section.
#   - "key: value" gives the default; "key:" opens a mapping; "- key:" a list of mappings (key[]).
#   - Inside a comment block, "# key: value" is a key that is not set by default, documented by the
#     comment lines above it; "# key:" followed by more indented "#   sub: value  # text" lines is
#     such a mapping, with one entry per sub-key. Other more indented lines are examples, shown as
#     they are. A box of '#' characters is a warning.
#   - The first comment block of the file is the DESCRIPTION.
use strict;
use warnings;

my $version = '';
if (@ARGV && $ARGV[0] eq '--version') {
    shift @ARGV;
    $version = shift @ARGV;
}
die "usage: yaml2man.pl [--version VERSION] conf/wsq.yaml OUT.5\n" unless @ARGV == 2;
my ($in, $out) = @ARGV;
open(my $fh, '<', $in) or die "yaml2man: $in: $!\n";
my @lines = <$fh>;
close $fh;
chomp @lines;

# ---- roff helpers ----------------------------------------------------------------------------
sub esc {
    my ($s) = @_;
    $s =~ s/\\/\\e/g;
    $s =~ s/-/\\-/g;
    return $s;
}
sub line_ok { # a text line may not start with . or ' (roff requests)
    my ($s) = @_;
    return $s =~ /^[.']/ ? "\\&$s" : $s;
}
my @roff;
sub emit { push @roff, @_ }

# Renders description items: ['p', text] (a line of a paragraph), ['v', text] (a verbatim line,
# e.g. an example) and ['br'] (a paragraph break). IN_ENTRY: inside a .TP entry, where paragraphs
# are .IP so that they keep the entry's indentation.
sub emit_items {
    my ($items, $in_entry) = @_;
    my $para = $in_entry ? '.IP' : '.PP';
    my $open = $in_entry ? 1 : 0; # a paragraph is open (text may follow directly)
    my $i = 0;
    while ($i < @$items) {
        my $kind = $items->[$i][0];
        if ($kind eq 'br') {
            $open = 0;
            $i++;
        } elsif ($kind eq 'v') {
            emit('.RS', '.nf');
            while ($i < @$items && $items->[$i][0] eq 'v') {
                emit(line_ok(esc($items->[$i][1])));
                $i++;
            }
            emit('.fi', '.RE');
            $open = 0;
        } else {
            emit($para) unless $open || $roff[-1] =~ /^\.(SH|SS)/;
            $open = 1;
            emit(line_ok(esc($items->[$i][1])));
            $i++;
        }
    }
}

# ---- parsing ---------------------------------------------------------------------------------
my @out;        # ordered output: ['section', name, desc] / ['sub', path, desc] / ['key', path, value, desc, unset]
my @pending;    # comment lines: [indent_of_hash, text]
my @stack;      # [indent, name] of the open mappings
my $header;     # description items of the file
my $first_block = 1;

sub path_for {
    my ($indent, $name) = @_;
    pop @stack while @stack && $stack[-1][0] >= $indent;
    return join('.', (map { $_->[1] } @stack), $name);
}

# Turns pending comment lines into description items, emitting the commented-out keys found in
# them (relative to PARENT). Returns the items left for the key that follows.
sub digest {
    my ($parent) = @_;
    my @c = @pending;
    @pending = ();
    my @items;
    # box of #s: drop the frame, keep the text
    my $boxed = grep { $_->[1] =~ /^#{5,}\s*$/ } @c;
    my @t;
    for my $l (@c) {
        my $text = $l->[1];
        next if $text =~ /^#{5,}\s*$/;
        $text =~ s/\s*#\s*$// if $boxed;
        push @t, $text;
    }
    my $base;
    for my $text (@t) {
        next if $text =~ /^\s*$/;
        my ($sp) = $text =~ /^(\s*)/;
        $base = length $sp if !defined $base || length $sp < $base;
    }
    $base //= 0;
    my $i = 0;
    my $prefix = $parent eq '' ? '' : "$parent.";
    while ($i < @t) {
        my $text = $t[$i];
        if ($text =~ /^\s*$/) {
            push @items, ['br'];
            $i++;
            next;
        }
        my ($sp) = $text =~ /^(\s*)/;
        my $ind = length $sp;
        my $body = substr($text, $base);
        if ($ind == $base && $body =~ /^([a-z_]+):\s+(\S+|"[^"]*"|\[[^\]]*\])\s*$/) {
            # a key that is not set by default
            push @out, ['key', "$prefix$1", $2, [@items], 1];
            @items = ();
            $i++;
            next;
        }
        if ($ind == $base && $body =~ /^([a-z_]+):\s*$/) {
            # a mapping that is not set by default, with its sub-keys
            my $mpath = "$prefix$1";
            push @out, ['key', $mpath, '', [@items], 1];
            @items = ();
            $i++;
            my $last;
            while ($i < @t && $t[$i] !~ /^\s*$/) {
                my ($csp) = $t[$i] =~ /^(\s*)/;
                last if length $csp <= $base;
                my $cb = $t[$i];
                if ($cb =~ /^\s+#\s?(.*)$/ && $last) {
                    push @{$last->[3]}, ['p', $1];
                } elsif ($cb =~ /^\s+([a-z_]+):\s*(.*?)\s*(?:#\s?(.*))?$/) {
                    $last = ['key', "$mpath.$1", $2, [defined $3 ? ['p', $3] : ()], 1];
                    push @out, $last;
                } else {
                    push @{$out[-1][3]}, ['v', substr($cb, $base)];
                }
                $i++;
            }
            next;
        }
        if ($ind > $base || $body =~ /^- /) {
            push @items, ['v', $body];
        } else {
            push @items, ['p', $body];
        }
        $i++;
    }
    # drop leading and trailing breaks
    shift @items while @items && $items[0][0] eq 'br';
    pop @items while @items && $items[-1][0] eq 'br';
    return \@items;
}

for my $n (0 .. $#lines) {
    my $l = $lines[$n];
    if ($l =~ /^(\s*)#(.*)$/) {
        my ($ind, $text) = (length $1, $2);
        $text =~ s/^ //;
        push @pending, [$ind, $text];
        next;
    }
    if ($l =~ /^\s*$/) {
        if (@pending) {
            my $parent = @stack ? join('.', map { $_->[1] } @stack) : '';
            # a block at column 0 closes the open mappings
            if ($pending[0][0] == 0) {
                @stack = ();
                $parent = '';
            }
            my $items = digest($parent);
            if ($first_block) {
                $header = $items;
            } elsif (@$items) {
                push @out, ['text', $items];
            }
        }
        $first_block = 0;
        next;
    }
    $first_block = 0;
    if ($l =~ /^(\s*)(- )?([a-z_]+):\s*(.*?)\s*$/) {
        my ($sp, $dash, $name, $rest) = ($1, $2, $3, $4);
        my $indent = length($sp) + ($dash ? 2 : 0);
        my $comment;
        if ($rest =~ /^(.*?)\s+#\s?(.*)$/) {
            ($rest, $comment) = ($1, $2);
        }
        if ($dash) {
            # the first key of a list item: the parent becomes name[]
            pop @stack while @stack && $stack[-1][0] >= $indent;
            $stack[-1][1] .= '[]' if @stack && $stack[-1][1] !~ /\[\]$/;
        }
        my $parent_path = do {
            my @s = grep { $_->[0] < $indent } @stack;
            join('.', map { $_->[1] } @s);
        };
        my $items = digest($parent_path);
        push @$items, ['p', $comment] if defined $comment;
        my $path = path_for($indent, $name);
        if ($rest eq '') {
            push @stack, [$indent, $name];
            push @out, [$indent == 0 ? 'section' : 'sub', $path, $items];
        } else {
            push @out, ['key', $path, $rest, $items, 0];
        }
        next;
    }
    die "yaml2man: $in:" . ($n + 1) . ": cannot read this line: $l\n";
}
if (@pending) {
    my $items = digest('');
    push @out, ['text', $items] if @$items;
}

die "yaml2man: no keys found in $in\n" unless grep { $_->[0] eq 'key' } @out;

# ---- the page --------------------------------------------------------------------------------
my @t = defined $ENV{SOURCE_DATE_EPOCH} ? gmtime($ENV{SOURCE_DATE_EPOCH}) : gmtime();
my @months = qw(January February March April May June July August September October November
                December);
my $date = "$months[$t[4]] " . ($t[5] + 1900);
emit(".\\\" Generated from conf/wsq.yaml by packaging/man/yaml2man.pl. Do not edit.");
emit(".TH WSQ.YAML 5 \"$date\" \"wsq $version\" \"File Formats\"");
emit('.nh', '.ad l');
emit('.SH NAME', 'wsq.yaml \- configuration file of wsqd, the wsq message broker');
emit('.SH SYNOPSIS', '.B /etc/wsq/wsq.yaml', '.br', '.B wsqd \-c', '.I FILE', '.br',
     '.B wsqd \-\-check\-config', '.I FILE');
emit('.SH DESCRIPTION');
my @hdr = @{$header // []};
shift @hdr if @hdr && $hdr[0][0] eq 'p' && $hdr[0][1] =~ /^wsq configuration$/i;
shift @hdr while @hdr && $hdr[0][0] eq 'br';
emit_items(\@hdr, 0);
emit('.PP',
     'The configuration is YAML. The sections below list every key with its default value, '
     . 'in the order of the annotated default file. A key written as \fIname\fR[] is a list of '
     . 'mappings; \fIname\fR[].\fIkey\fR is a key of each of them. Keys marked '
     . '\fInot set by default\fR are shown with an example value.');

for my $e (@out) {
    my $kind = $e->[0];
    if ($kind eq 'section') {
        emit('.SH ' . uc(esc($e->[1])));
        emit_items($e->[2], 0);
    } elsif ($kind eq 'sub') {
        emit('.SS ' . esc($e->[1]));
        emit_items($e->[2], 0);
    } elsif ($kind eq 'text') {
        emit_items($e->[1], 0);
    } else {
        my ($path, $value, $items, $unset) = @$e[1 .. 4];
        emit('.TP', '.B ' . esc($path));
        if ($unset) {
            emit($value eq '' ? 'Not set by default.'
                              : 'Not set by default. Example: \fB' . esc($value) . '\fR');
        } else {
            emit('Default: \fB' . esc($value) . '\fR');
        }
        emit('.br') if @$items && $items->[0][0] eq 'p';
        emit_items($items, 1);
    }
}

emit('.SH FILES',
     '.TP', '.B /etc/wsq/wsq.yaml',
     'The configuration of the wsqd service installed by the Debian package: this file with '
     . '\fBstorage.path\fR set to \fB/var/lib/wsq\fR.',
     '.TP', '.B /var/lib/wsq',
     'The data directory of the service (\fBdata.mdb\fR, \fBlock.mdb\fR, \fBwsq.lock\fR), owned '
     . 'by the \fBwsq\fR user.',
     '.TP', '.B /usr/share/doc/wsq/examples/production.yaml',
     'A production example: TLS, no anonymous rights, tokens and JWTs, retention rules.',
     '.SH "SEE ALSO"',
     '.BR wsqd (8),',
     '.BR wsqctl (1),',
     '.BR sha256sum (1)',
     '.PP',
     '/usr/share/doc/wsq/OPERATIONS.md');

open(my $oh, '>', "$out.tmp") or die "yaml2man: $out.tmp: $!\n";
print $oh join("\n", @roff), "\n";
close $oh or die "yaml2man: $out.tmp: $!\n";
rename("$out.tmp", $out) or die "yaml2man: $out: $!\n";
