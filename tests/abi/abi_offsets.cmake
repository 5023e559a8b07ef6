# Runs the four abi_offsets programs (1.0 C, 1.0 C++, today C, today C++) and compares their
# tables with abi_members.py --compare: 1.0's C++ table must equal its C table, and every 1.0
# member (and, with LAYOUT_V14 ... _V111, every member of the 1.4 ... 1.11 release) must sit at the
# same offset with the same size in both of today's tables.
set(dumps)
set(i 0)
foreach(program ${PROGRAMS})
  set(dump ${OUT}/abi_offsets_${i}.txt)
  execute_process(COMMAND ${program} OUTPUT_FILE ${dump} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${program} failed: ${rc}")
  endif()
  list(APPEND dumps ${dump})
  math(EXPR i "${i} + 1")
endforeach()
list(GET dumps 0 v10_c)
list(GET dumps 1 v10_cpp)
list(GET dumps 2 now_c)
list(GET dumps 3 now_cpp)
execute_process(COMMAND ${PYTHON} ${SCRIPT} --compare ${v10_c} ${v10_cpp} RESULT_VARIABLE rc1)
execute_process(COMMAND ${PYTHON} ${SCRIPT} --compare ${v10_c} ${now_c} ${now_cpp} RESULT_VARIABLE rc2)
# Members added by 1.1-1.11 are pinned by the tables of the 1.4, 1.5, 1.6, 1.7, 1.8 and 1.11 releases
# (64-bit targets only).
set(rc3 0)
if(LAYOUT_V14)
  execute_process(COMMAND ${PYTHON} ${SCRIPT} --compare --release 1.4 ${LAYOUT_V14} ${now_c} ${now_cpp}
    RESULT_VARIABLE rc3)
endif()
set(rc4 0)
if(LAYOUT_V15)
  execute_process(COMMAND ${PYTHON} ${SCRIPT} --compare --release 1.5 ${LAYOUT_V15} ${now_c} ${now_cpp}
    RESULT_VARIABLE rc4)
endif()
set(rc5 0)
if(LAYOUT_V16)
  execute_process(COMMAND ${PYTHON} ${SCRIPT} --compare --release 1.6 ${LAYOUT_V16} ${now_c} ${now_cpp}
    RESULT_VARIABLE rc5)
endif()
set(rc6 0)
if(LAYOUT_V17)
  execute_process(COMMAND ${PYTHON} ${SCRIPT} --compare --release 1.7 ${LAYOUT_V17} ${now_c} ${now_cpp}
    RESULT_VARIABLE rc6)
endif()
set(rc7 0)
if(LAYOUT_V18)
  execute_process(COMMAND ${PYTHON} ${SCRIPT} --compare --release 1.8 ${LAYOUT_V18} ${now_c} ${now_cpp}
    RESULT_VARIABLE rc7)
endif()
set(rc8 0)
if(LAYOUT_V111)
  execute_process(COMMAND ${PYTHON} ${SCRIPT} --compare --release 1.11 ${LAYOUT_V111} ${now_c} ${now_cpp}
    RESULT_VARIABLE rc8)
endif()
if(NOT rc1 EQUAL 0 OR NOT rc2 EQUAL 0 OR NOT rc3 EQUAL 0 OR NOT rc4 EQUAL 0 OR NOT rc5 EQUAL 0 OR NOT rc6 EQUAL 0
   OR NOT rc7 EQUAL 0 OR NOT rc8 EQUAL 0)
  message(FATAL_ERROR "ABI layout changed (see above)")
endif()
