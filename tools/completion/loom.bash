# bash completion for loom: commands, then the flags each command's --help lists (so the
# completion knows exactly the arguments of the installed loom, plugins' keys aside).
_loom()
{
    local cur="${COMP_WORDS[COMP_CWORD]}"
    local cmd="${COMP_WORDS[1]}"
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "train evaluate predict plugins make-data convert tokenize launch consolidate plot doctor version help" -- "$cur"))
        return
    fi
    # Values of the flags that take a word from a fixed list.
    case "${COMP_WORDS[COMP_CWORD-1]}" in
        --ddp_backend) COMPREPLY=($(compgen -W "nccl gloo" -- "$cur")); return ;;
        --include|--exclude) COMPREPLY=($(compgen -W "localhost:" -- "$cur")); compopt -o nospace 2>/dev/null; return ;;
        --source_split|--target_split) COMPREPLY=($(compgen -W "char space" -- "$cur")); return ;;
        --truncation) COMPREPLY=($(compgen -W "true false" -- "$cur")); return ;;
    esac
    if [[ "$cur" == --* ]]; then
        local flags
        flags=$("${COMP_WORDS[0]}" "$cmd" --help 2>/dev/null | grep -oE -- '--[a-z][a-z0-9_.-]*' | sort -u)
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
        return
    fi
    COMPREPLY=($(compgen -f -- "$cur"))
}
complete -o filenames -F _loom loom
